package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// initConfig is the config `runnel init` writes: the annotated defaults
// (configs/gateway.yaml) apply to every key it does not set.
const initConfig = `# Written by runnel init: a ready-to-use config with generated credentials.
# The passwords and tokens were printed once when it was written; only the
# bcrypt hashes of the passwords are kept here. Every other key has its
# default (see configs/gateway.yaml). Keep this file private (mode 0600).

security:
  # Refuse to start if the credentials below are removed.
  require_credentials: true

http:
  # API, dashboard data and, as http_write.tokens is empty, the write
  # endpoint (Authorization: Bearer <token>, or Token <token>).
  tokens: [%s]

http_write:
  # Tokens for POST /api/v2/write only (Telegraf's influxdb_v2 output).
  tokens: [%s]

mqtt:
  users:
    # Everything, including the gateway's reserved alerts/ and $SYS topics.
    - username: admin
      password_hash: %s
      publish: ["#", "alerts/#"]
      subscribe: ["#", "alerts/#", "$SYS/#"]
    # A device publishes only as itself: telemetry/<username>/<measurement>.
    - username: %s
      password_hash: %s
      publish: ["telemetry/%%u/+", "biosignal/%%u/+", "lp/%%u/#"]
      subscribe: ["cmd/%%u/#"]
`

// secret returns a random secret of 24 bytes, base64url: 32 characters.
func secret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported systems
	return base64.RawURLEncoding.EncodeToString(b)
}

// initCmd writes a device config with generated credentials (mode 0600,
// never over an existing file) and prints the secrets once.
func initCmd(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("runnel init", flag.ContinueOnError)
	flags.SetOutput(stderr)
	out := flags.String("o", "runnel.yaml", "config file to write (must not exist)")
	device := flags.String("device", "device-1", "MQTT username of the device account")
	profile := flags.String("profile", "", "start from this config (e.g. configs/raspberry-pi.yaml): its keys and comments are kept, the credentials set")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() > 0 || !validUsername(*device) {
		fmt.Fprintf(stderr, "runnel init: -device %q: want 1 to 64 characters without / + # %% or spaces\n", *device)
		return 2
	}
	adminPW, devicePW, apiToken, writeToken := secret(), secret(), secret(), secret()
	adminHash, err := bcrypt.GenerateFromPassword([]byte(adminPW), passwdCost)
	if err != nil {
		fmt.Fprintf(stderr, "runnel init: %v\n", err)
		return 1
	}
	deviceHash, err := bcrypt.GenerateFromPassword([]byte(devicePW), passwdCost)
	if err != nil {
		fmt.Fprintf(stderr, "runnel init: %v\n", err)
		return 1
	}
	text := fmt.Sprintf(initConfig, strconv.Quote(apiToken), strconv.Quote(writeToken),
		strconv.Quote(string(adminHash)), *device, strconv.Quote(string(deviceHash)))
	if *profile != "" {
		base, err := os.ReadFile(*profile)
		if err != nil {
			fmt.Fprintf(stderr, "runnel init: %v\n", err)
			return 1
		}
		if text, err = overlay(base, text); err != nil {
			fmt.Fprintf(stderr, "runnel init: -profile %s: %v\n", *profile, err)
			return 2
		}
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			fmt.Fprintf(stderr, "runnel init: %s exists: not overwritten (its credentials would be lost)\n", *out)
			return 2
		}
		fmt.Fprintf(stderr, "runnel init: %v\n", err)
		return 1
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		fmt.Fprintf(stderr, "runnel init: write %s: %v\n", *out, err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "runnel init: write %s: %v\n", *out, err)
		return 1
	}
	fmt.Fprintf(stdout, `wrote %s (mode 0600). These secrets are shown once; store them now:
  mqtt user admin:      %s
  mqtt user %-10s  %s
  http token (API):     %s
  http write token:     %s
Start with: runnel run -config %s
`, *out, adminPW, *device+":", devicePW, apiToken, writeToken, *out)
	return 0
}

// overlay returns the YAML document base with every key of top set in it:
// mappings are merged key by key, any other value replaces base's. The
// comments of base are kept; top's are kept for the keys base lacks.
func overlay(base []byte, top string) (string, error) {
	var b, t yaml.Node
	if err := yaml.Unmarshal(base, &b); err != nil {
		return "", err
	}
	if err := yaml.Unmarshal([]byte(top), &t); err != nil {
		return "", fmt.Errorf("BUG: init config: %w", err)
	}
	if len(b.Content) == 0 { // an empty file
		return top, nil
	}
	if b.Content[0].Kind != yaml.MappingNode {
		return "", errors.New("not a YAML mapping")
	}
	merge(b.Content[0], t.Content[0])
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&b); err != nil {
		return "", err
	}
	return "# Credentials set by runnel init (bcrypt hashes; the secrets were printed\n# once). Keep this file private (mode 0600 or 0640).\n" + out.String(), nil
}

// merge sets the keys of mapping node src in mapping node dst.
func merge(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		j := 0
		for ; j+1 < len(dst.Content); j += 2 {
			if dst.Content[j].Value == k.Value {
				break
			}
		}
		switch {
		case j+1 >= len(dst.Content):
			dst.Content = append(dst.Content, k, v)
		case dst.Content[j+1].Kind == yaml.MappingNode && v.Kind == yaml.MappingNode:
			merge(dst.Content[j+1], v)
		default:
			v.HeadComment, v.LineComment = dst.Content[j+1].HeadComment, dst.Content[j+1].LineComment
			dst.Content[j+1] = v
		}
	}
}

func validUsername(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r == '/' || r == '+' || r == '#' || r == '%' || r == ' ' || r == '"' || r == '\\' || r < 0x20:
			return false
		}
	}
	return true
}
