package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/quote"
)

const statusUsage = `Usage:
  warren status --admin HOST:PORT [--token T | --token-file F] [--json]
  warren status -c FILE [--role server|client] [--json]

Prints the state of a running warren server or client, read from its admin
API: clients, sessions, services, transport, RTT, uptime and bytes. With -c
it finds the admin address and token in FILE's [server.admin] or
[client.admin] table. --json prints the API's JSON as it came. Exits 0
when the daemon is ready, 1 when it is not (a client without a session,
say: the reason goes to stderr) or cannot be asked.

Flags:
`

const healthUsage = `Usage:
  warren health --admin HOST:PORT [--token T | --token-file F]
  warren health -c FILE [--role server|client]

Exits 0 when the daemon is ready: its admin API answers GET /readyz with
200 within --timeout (server: its listeners are bound; client: its session
is up). Exits 1 otherwise, the reason on stderr: for a Docker HEALTHCHECK.
/readyz needs the admin token when one is set: from --token, --token-file,
$WARREN_ADMIN_TOKEN or FILE's admin table. --live asks only whether the
process answers (GET /healthz, no token).

Flags:
`

// adminFlags are the flags status and health share.
type adminFlags struct {
	addr, token, tokenFile, path, role *string
	timeout                            *time.Duration
}

func addAdminFlags(fs *flag.FlagSet, timeout time.Duration, withToken bool) adminFlags {
	f := adminFlags{
		addr:    fs.String("admin", "", "the admin API, host:port"),
		role:    fs.String("role", "", `with -c: read [server.admin] ("server") or [client.admin] ("client"); needed only when FILE has both`),
		timeout: fs.Duration("timeout", timeout, "give up after this long"),
	}
	var path string
	fs.StringVar(&path, "c", "", "config file to find the admin address and token in")
	fs.StringVar(&path, "config", "", "config file to find the admin address and token in")
	f.path = &path
	if withToken {
		f.token = fs.String("token", "", "the admin token (default $WARREN_ADMIN_TOKEN)")
		f.tokenFile = fs.String("token-file", "", "read the admin token from this file")
	}
	return f
}

// target works out the admin API to talk to from the flags.
func (f adminFlags) target() (admin.Client, error) {
	var t admin.Client
	switch {
	case *f.path != "" && *f.addr != "":
		return t, usagef("-c and --admin: give one")
	case *f.path == "" && *f.addr == "":
		return t, usagef("--admin HOST:PORT or -c FILE is required")
	case *f.path == "" && *f.role != "":
		return t, usagef("--role goes with -c")
	case *f.path != "":
		cfg, err := adminFromFile(*f.path, *f.role, os.LookupEnv)
		if err != nil {
			return t, usageError{err}
		}
		t.Addr, t.Token = cfg.Address, cfg.Token
	default:
		t.Addr = *f.addr
	}
	if f.token != nil {
		switch {
		case *f.token != "" && *f.tokenFile != "":
			return t, usagef("--token and --token-file: give one")
		case *f.token != "":
			t.Token = *f.token
		case *f.tokenFile != "":
			b, err := os.ReadFile(*f.tokenFile)
			if err != nil {
				return t, usagef("--token-file: %w", err)
			}
			t.Token = strings.TrimSpace(string(b))
		case t.Token == "":
			t.Token = os.Getenv("WARREN_ADMIN_TOKEN")
		}
	}
	addr, err := admin.DialAddress(t.Addr)
	if err != nil {
		return t, usageError{err}
	}
	t.Addr = addr
	return t, nil
}

// adminFromFile reads the [server.admin] or [client.admin] table of the
// config file at path (role "server" or "client"; "" picks the one table
// that has an address) and resolves its token. It reads only those
// tables, so a status check does not depend on the rest of the file.
func adminFromFile(path, role string, lookupEnv func(string) (string, bool)) (admin.Config, error) {
	var raw struct {
		Server struct {
			Admin *admin.Config `toml:"admin"`
		} `toml:"server"`
		Client struct {
			Admin *admin.Config `toml:"admin"`
		} `toml:"client"`
	}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return admin.Config{}, err
	}
	tables := map[string]*admin.Config{"server": raw.Server.Admin, "client": raw.Client.Admin}
	for r, c := range tables {
		if c == nil || !c.Enabled() {
			delete(tables, r)
		}
	}
	var cfg *admin.Config
	switch role {
	case "server", "client":
		if cfg = tables[role]; cfg == nil {
			return admin.Config{}, fmt.Errorf("%s: no address in [%s.admin]: that admin API is off", path, role)
		}
	case "":
		switch len(tables) {
		case 0:
			return admin.Config{}, fmt.Errorf("%s: no address in [server.admin] or [client.admin]: the admin API is off", path)
		case 2:
			return admin.Config{}, fmt.Errorf("%s: both [server.admin] and [client.admin] have an address: choose one with --role", path)
		}
		for r := range tables {
			cfg, role = tables[r], r
		}
	default:
		return admin.Config{}, fmt.Errorf(`--role: %s is not "server" or "client"`, quote.Short(role))
	}
	for key, v := range map[string]string{"address": cfg.Address, "token": cfg.Token, "token_file": cfg.TokenFile, "token_env": cfg.TokenEnv} {
		if strings.Contains(v, "${") {
			// TODO: read the file with config.Load, which expands ${NAME},
			// once the config loader knows the admin tables.
			return admin.Config{}, fmt.Errorf("%s: %s.admin.%s uses ${...}, which status and health do not expand yet: give --admin (and --token)", path, role, key)
		}
	}
	if err := cfg.ResolveToken(lookupEnv); err != nil {
		return admin.Config{}, fmt.Errorf("%s: %s.%w", path, role, err)
	}
	return *cfg, nil
}

// call runs f on the admin API the flags name, within -timeout. A 401
// says where the token comes from.
func (af adminFlags) call(f func(context.Context, admin.Client) error) error {
	c, err := af.target()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *af.timeout)
	defer cancel()
	err = f(ctx, c)
	var ae *admin.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		return fmt.Errorf("admin API at %s: 401: missing or wrong token (--token, --token-file, $WARREN_ADMIN_TOKEN or the config's admin token)", ae.Addr)
	}
	return err
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", statusUsage, stdout, stderr)
	af := addAdminFlags(fs.FlagSet, 5*time.Second, true)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var st admin.Status
	var body []byte
	err := af.call(func(ctx context.Context, c admin.Client) (err error) {
		st, body, err = c.Status(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if *asJSON {
		_, err = stdout.Write(body)
	} else {
		err = printStatus(stdout, st)
	}
	if err == nil && !st.Ready {
		err = notReady(st.NotReady)
	}
	return err
}

// notReady is the error of status and health for a daemon that answers
// but is not ready.
func notReady(reason string) error {
	if reason = strings.TrimSpace(reason); reason == "" {
		reason = "no reason given"
	}
	return errors.New("not ready: " + reason)
}

func runHealth(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", healthUsage, stdout, stderr)
	af := addAdminFlags(fs.FlagSet, 2*time.Second, true)
	live := fs.Bool("live", false, "only check that the process answers (GET /healthz), not that it is ready")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *live {
		if err := af.call(func(ctx context.Context, c admin.Client) error { return c.Live(ctx) }); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "ok")
		return nil
	}
	err := af.call(func(ctx context.Context, c admin.Client) error { return c.Ready(ctx) })
	var ae *admin.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
		return notReady(ae.Body)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	return nil
}

// printStatus writes st as a few header lines and a table.
func printStatus(w io.Writer, st admin.Status) error {
	ready := "ready"
	if !st.Ready {
		ready = "not ready: " + st.NotReady
	}
	fmt.Fprintf(w, "warren %s %s, up %s, %s\n", st.Role, st.Version, fmtDuration(st.Uptime.D()), ready)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	switch st.Role {
	case admin.RoleServer:
		var ls []string
		for _, l := range st.Listeners {
			ls = append(ls, l.Transport+" "+l.Address)
		}
		fmt.Fprintf(w, "listeners: %s\n", orDash(strings.Join(ls, ", ")))
		if st.Fingerprint != "" {
			fmt.Fprintf(w, "fingerprint: %s\n", st.Fingerprint)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "CLIENT\tSTATE\tTRANSPORT\tREMOTE\tRTT\tUPTIME\tSTREAMS\tSERVICE\tPUBLIC\tCONNS\tIN\tOUT")
		for _, c := range st.Clients {
			if !c.Connected() {
				fmt.Fprintf(tw, "%s\toffline\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", c.Name)
				continue
			}
			for _, s := range c.Sessions {
				sess := fmt.Sprintf("%s\tconnected\t%s\t%s\t%s\t%s\t%d", c.Name, s.Transport, s.Remote,
					fmtRTT(s.RTT.D()), fmtDuration(s.Uptime.D()), s.Streams)
				blank := "\t\t\t\t\t\t"
				if len(s.Services) == 0 {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", sess)
				}
				for i, svc := range s.Services {
					if i > 0 {
						sess = blank
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sess, svc.Name, public(svc),
						conns(svc), fmtBytes(svc.BytesIn), fmtBytes(svc.BytesOut))
				}
			}
		}
		if len(st.Clients) == 0 {
			fmt.Fprintln(tw, "(no clients configured)")
		}
		if st.Cluster != nil {
			if err := tw.Flush(); err != nil {
				return err
			}
			printCluster(w, tw, st.Cluster)
		}
	case admin.RoleClient:
		if len(st.Servers) > 0 {
			return printClientServers(w, tw, st)
		}
		// A daemon from before several servers.
		fmt.Fprintf(w, "server: %s (%s)\n", orDash(st.Server), orDash(st.Transport))
		s := st.Session
		if s == nil {
			fmt.Fprintln(w, "session: none")
			if st.LastError != "" {
				fmt.Fprintf(w, "last error: %s\n", st.LastError)
			}
			printVisitors(w, tw, st.Visitors)
			return tw.Flush()
		}
		in, out := s.Bytes()
		fmt.Fprintf(w, "session: as %q to %s over %s, up %s, RTT %s, %d streams, in %s, out %s\n",
			s.Client, s.Remote, s.Transport, fmtDuration(s.Uptime.D()), fmtRTT(s.RTT.D()), s.Streams,
			fmtBytes(in), fmtBytes(out))
		if st.Connections > 0 {
			fmt.Fprintf(w, "parallel sessions up: %d (the line above is the first)\n", st.Connections)
		}
		fmt.Fprintln(w)
		printServices(tw, s.Services)
		printVisitors(w, tw, st.Visitors)
	default:
		return fmt.Errorf("status: unknown role %q", st.Role)
	}
	return tw.Flush()
}

// printCluster adds a cluster member's view to a server's status: its
// members with this server's links to them, then every route in the
// cluster, marked local where a session here serves it.
func printCluster(w io.Writer, tw *tabwriter.Writer, c *admin.ClusterStatus) {
	fmt.Fprintf(w, "\ncluster: this server is %s (peers reach it at %s)\n", c.ID, orDash(c.PeerAddress))
	if c.Error != "" {
		fmt.Fprintf(w, "registry: %s (the view below is the last one known)\n", oneLine(c.Error))
	}
	fmt.Fprintln(tw, "MEMBER\tPEER ADDRESS\tLINK\tFORWARDING\tTO IT\tFROM IT\tSENT\tRECEIVED")
	for _, m := range c.Members {
		link := "-"
		switch {
		case m.Self:
			link = "self"
		case m.Link:
			link = "up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", m.ID, m.PeerAddress, link, m.Forwarding,
			m.ForwardedOut, m.ForwardedIn, fmtBytes(m.BytesSent), fmtBytes(m.BytesReceived))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "ROUTE\tCLIENT\tSERVER\tWHERE")
	for _, r := range c.Routes {
		where := "remote"
		if r.Local {
			where = "local"
		}
		if r.Shared {
			where += ", shared"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Key, r.Client, r.Server, where)
	}
	if len(c.Routes) == 0 {
		fmt.Fprintln(tw, "(no routes in the cluster)")
	}
}

// printClientServers writes a client's status: a row per session of each
// server (one for a server without any), the pacing of each KCP session,
// then its services.
func printClientServers(w io.Writer, tw *tabwriter.Writer, st admin.Status) error {
	serving := 0
	for _, srv := range st.Servers {
		if srv.State == admin.ServerUp {
			serving++
		}
	}
	fmt.Fprintf(w, "servers: %d of %d serving\n", serving, len(st.Servers))
	if st.Session != nil {
		in, out := st.Session.Bytes()
		fmt.Fprintf(w, "client: %q, in %s, out %s\n", st.Session.Client, fmtBytes(in), fmtBytes(out))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "SERVER\tSTATE\tTRANSPORT\tREMOTE\tSESSION\tRTT\tUPTIME\tSTREAMS\tLAST ERROR")
	for _, srv := range st.Servers {
		if len(srv.Sessions) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t%s\n", srv.Server, srv.State, orDash(srv.Transport), orDash(srv.Address), orDash(oneLine(srv.LastError)))
		}
		for _, s := range srv.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t-\n", srv.Server, srv.State, orDash(s.Transport), orDash(s.Remote),
				s.ID, fmtRTT(s.RTT.D()), fmtDuration(s.Uptime.D()), s.Streams)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, srv := range st.Servers {
		for _, s := range srv.Sessions {
			if s.Pacing != nil {
				fmt.Fprintf(w, "pacing of %s to %s: %s\n", orDash(s.ID), srv.Server, fmtPacing(s.Pacing))
			}
		}
	}
	if st.Session == nil {
		if st.LastError != "" {
			fmt.Fprintf(w, "\nlast error: %s\n", st.LastError)
		}
		printVisitors(w, tw, st.Visitors)
		return tw.Flush()
	}
	fmt.Fprintln(w)
	printServices(tw, st.Session.Services)
	printVisitors(w, tw, st.Visitors)
	return tw.Flush()
}

// printServices writes a client's services table.
func printServices(tw *tabwriter.Writer, svcs []admin.ServiceStatus) {
	fmt.Fprintln(tw, "SERVICE\tPUBLIC\tTARGET\tCONNS\tIN\tOUT")
	for _, svc := range svcs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", svc.Name, public(svc), orDash(svc.Target),
			conns(svc), fmtBytes(svc.BytesIn), fmtBytes(svc.BytesOut))
	}
}

// oneLine keeps a message to its first line, for a table cell.
func oneLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// printVisitors adds a client's visitors to its status, a table of their
// own after the services (flushing tw first, so the two do not align).
func printVisitors(w io.Writer, tw *tabwriter.Writer, vs []admin.VisitorStatus) {
	if len(vs) == 0 {
		return
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "VISITOR\tSERVICE\tBIND\tSTATE\tCONNS\tIN\tOUT")
	for _, v := range vs {
		state := "ok"
		if v.Refused != "" {
			state = "refused: " + v.Refused
		}
		bind := v.Bind
		if v.Protocol != "" {
			bind += "/" + v.Protocol
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, v.Service, bind, state,
			v.Connections, fmtBytes(v.BytesIn), fmtBytes(v.BytesOut))
	}
}

// public says where a service is reachable: ":PORT" (":PORT/udp" for a
// UDP service) and its domains; "private" for a private service.
func public(s admin.ServiceStatus) string {
	if s.Private {
		return "private"
	}
	var parts []string
	if s.RemotePort != 0 && s.Protocol != "" {
		parts = append(parts, ":"+strconv.Itoa(s.RemotePort)+"/"+s.Protocol)
	} else if s.RemotePort != 0 {
		parts = append(parts, ":"+strconv.Itoa(s.RemotePort))
	}
	parts = append(parts, s.Domains...)
	return orDash(strings.Join(parts, ","))
}

// conns is a service's open connections, or a UDP service's flows.
func conns(s admin.ServiceStatus) string {
	if s.Protocol == "udp" && s.Flows == 1 {
		return "1 flow"
	} else if s.Protocol == "udp" {
		return strconv.Itoa(s.Flows) + " flows"
	}
	return strconv.Itoa(s.Connections)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtDuration rounds an uptime for reading: to the second from a minute
// up, to the tenth of a second below.
func fmtDuration(d time.Duration) string {
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// fmtRTT rounds a round trip to a tenth of a millisecond; 0 is "-" (not
// measured yet).
func fmtRTT(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(100 * time.Microsecond).String()
}

// fmtPacing describes a KCP session's pacing in one line.
func fmtPacing(p *admin.PacingStatus) string {
	switch p.Mode {
	case "unpaced":
		return "unpaced (rate_mbit = 0)"
	case "fixed":
		return fmt.Sprintf("fixed at %.1f Mbit/s of data (rate_mbit = %s)", p.PacingRate/1e6, p.RateMbit)
	}
	return fmt.Sprintf("auto, %s: bandwidth %.1f Mbit/s, min RTT %s, pacing %.1f Mbit/s, in flight %s of %s",
		p.Mode, p.Bandwidth/1e6, fmtRTT(p.MinRTT.D()), p.PacingRate/1e6, fmtBytes(p.InFlight), fmtBytes(p.InFlightCap))
}

// fmtBytes writes a byte count with a binary unit.
func fmtBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}
