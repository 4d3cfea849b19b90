// Command warren is a reverse-tunnel daemon: "warren server" on a public
// host, "warren client" beside private services, "warren demo" to see both
// on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
	"github.com/warren-tunnel/warren/internal/version"
)

// Exit codes.
const (
	exitOK      = 0 // clean stop on SIGINT/SIGTERM
	exitRuntime = 1 // the daemon failed or gave up
	exitUsage   = 2 // bad command line or config
)

// usageError marks errors that exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

const mainUsage = `warren: a reverse tunnel over TCP+TLS or KCP+TLS.

Usage:
  warren server -c FILE            run the public side
  warren server --listen kcp://:7000 --token T --ports 2222
  warren client -c FILE            run the private side
  warren client --server kcp://host:7000 --token T --fingerprint sha256:... --service ssh=2222:127.0.0.1:22
  warren demo                      server, client and a web page on loopback
  warren check -c FILE             check a config file without starting anything
  warren status --admin HOST:PORT  show a running daemon's sessions and services
  warren health --admin HOST:PORT  exit 0 if a running daemon is ready
  warren fingerprint               print the server certificate's fingerprint, as clients pin it
  warren token                     print a new random token
  warren version                   print the version, commit and commit date (also --version)
  warren swarm -c FILE -n N        run N clients in one process (load tests, benchmarks)
  warren cluster client add|remove|list -c FILE   manage the clients a cluster keeps in etcd

Run "warren COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) error{
		"server":      runServer,
		"client":      runClient,
		"demo":        runDemo,
		"check":       runCheck,
		"cluster":     runCluster,
		"fingerprint": runFingerprint,
		"status":      runStatus,
		"swarm":       runSwarm,
		"health":      runHealth,
		"token":       runToken,
		"version":     runVersion,
	}
	cmd, ok := cmds[args[0]]
	switch {
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	case args[0] == "--version" || args[0] == "-version":
		cmd, args = runVersion, append([]string{"version"}, args[1:]...)
	case !ok:
		fmt.Fprintf(stderr, "warren: unknown command %s\n\n%s", quote.Short(args[0]), mainUsage)
		return exitUsage
	}
	err := cmd(args[1:], stdout, stderr)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "warren %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "warren %s: %v\n", args[0], err)
		return exitRuntime
	}
}

// flags is a command's flag set. "--help" prints the usage to stdout and
// exits 0; a bad flag prints the error and the usage to stderr and exits 2.
type flags struct {
	*flag.FlagSet
	usage  string
	stdout io.Writer
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name, usage string, stdout, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &flags{FlagSet: fs, usage: usage, stdout: stdout}
}

// configFlag defines -c FILE and its long form --config FILE.
func (f *flags) configFlag(usage string) *string {
	path := new(string)
	f.StringVar(path, "c", "", usage)
	f.StringVar(path, "config", "", usage)
	return path
}

// printUsage writes the usage text and the flags' defaults to w.
func (f *flags) printUsage(w io.Writer) {
	fmt.Fprint(w, f.usage)
	out := f.Output()
	f.SetOutput(w)
	f.PrintDefaults()
	f.SetOutput(out)
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flags, args []string) error {
	fs.Usage = func() {} // printed below, where help and errors differ
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage(fs.stdout)
			return err
		}
		fs.printUsage(fs.Output())
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %s", quote.Short(fs.Arg(0)))
	}
	return nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits at once.
func signalContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
		case <-done:
			return
		}
		cancel()
		select {
		case s := <-ch:
			fmt.Fprintf(stderr, "warren: second %v: exiting now\n", s)
			os.Exit(exitRuntime)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

func runToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token", "Usage: warren token\n\nPrints a new random token (32 bytes, base64url) for [[server.clients]] and [client].\n", stdout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, token.New())
	return nil
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "Usage: warren version (or warren --version)\n\nPrints the release, the commit the binary was built from and its date.\n", stdout, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, version.Get())
	return nil
}
