// Package readmetest holds no code, only tests that keep the documentation
// true:
//
//   - TestREADME runs the shell examples of the repository's README.md
//     against a real gateway (the built binary on loopback ports) and
//     checks the outputs the README documents;
//   - TestREADMEEnvDefaults checks the defaults in the README's table of
//     environment variables against the loader's;
//   - TestDocLinks checks that the relative links of README.md and docs/
//     stay inside the repository and exist;
//   - TestImportDirection checks the import order docs/ARCHITECTURE.md
//     describes.
//
// # Which examples run
//
// Only blocks marked in README.md with an HTML comment on the line before
// their opening fence (blank lines may come between):
//
//   - `<!-- readme-test -->` before a ```sh block: every command of the
//     block runs, in order, in bash, in a work directory holding bin/runnel
//     (built by the test) and configs/ (the repository's). The README's
//     ports (localhost:8080, UDP 8089, MQTT 1883) are rewritten to the test
//     gateway's. Two kinds of command are not run because the test does
//     their job itself: `make ...` (it builds the binary) and
//     `./bin/runnel run ...` (it runs the gateway). Every command that runs
//     must exit 0.
//   - `<!-- readme-test: nonempty -->`: as above, and every JSON array the
//     documented JSON output shows with elements must be non-empty in the
//     real output too.
//   - `<!-- readme-test: pending -->`: the block documents what a known
//     defect still gets wrong. It runs; a mismatch is logged, not failed,
//     and a match fails the test, asking for the marker to become
//     `<!-- readme-test -->` now that the defect is fixed.
//   - `<!-- readme-test: config -->` before a ```yaml block: the block goes
//     into the test gateway's config file (blocks must be disjoint
//     top-level sections).
//
// # Documented outputs
//
//   - A trailing comment on a command line (`curl -s localhost:8080/readyz
//     # {"ready":true}`) is its output.
//   - Comment lines right after a command (`# HTTP/1.1 400 Bad Request`)
//     are its output; a comment line starting with more than one space
//     continues the line before it. Text may come between two documented
//     lines (curl -i prints headers between the status line and the body).
//   - A ```json block right after a marked ```sh block is the output of its
//     last command: the real output must be JSON with every key the
//     documented one has, with values of the same JSON kind.
//
// Text outputs are compared with whitespace removed; "..." and "…" match
// anything; hexadecimal ids (a commit), Go versions (go1.26.8) and
// platforms (linux/amd64) match any of their kind. A query (a command
// without POST data) whose documented output does not match yet is run
// again until it does or a deadline passes, since the gateway applies an
// acknowledged reading to its windows and alerts a moment later.
//
// The test needs curl and mosquitto-clients (and whatever else the marked
// blocks call); without one it skips, naming the Debian package, unless
// REQUIRE_TEST_TOOLS=1 (CI), where that is a failure.
package readmetest
