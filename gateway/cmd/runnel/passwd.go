package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// passwdCost is the bcrypt cost of `runnel passwd`: about 50 ms on a
// Raspberry Pi 4 per check; the broker caches successful checks.
const passwdCost = 10

// passwd reads one password line from in and prints its bcrypt hash. The
// password never appears in a command line (ps would show it).
func passwd(in io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "runnel passwd: read password: %v\n", err)
		return 1
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "runnel passwd: empty password; usage: echo -n 'secret' | runnel passwd")
		return 2
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), passwdCost)
	if err != nil {
		fmt.Fprintf(stderr, "runnel passwd: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}
