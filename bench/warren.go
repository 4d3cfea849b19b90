package main

// Building warren, writing its config files, and starting a server and a
// client as real processes ("warren server -c FILE", "warren client -c
// FILE").

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// pathSpec is one way to reach the backend: direct, or through warren with
// some transport settings.
type pathSpec struct {
	Name      string // direct, tcp, tcp-x4, kcp, kcp-fec, tcp-plain, kcp-plain
	Transport string // tcp or kcp; "" for direct
	TLS       bool
	FEC       bool
	// Connections is the client's connections (parallel sessions); 0
	// leaves the default.
	Connections int
	// KCPRate is [kcp] rate_mbit: "" leaves the default ("auto"; 0,
	// unpaced, in builds before issue 18; the lossy suite runs "auto"
	// there on HEAD, kcpRateOf), "fixed" is the lossy suite's -kcp-rate,
	// else the value as written.
	KCPRate string
}

var allPaths = map[string]pathSpec{
	"direct": {Name: "direct"},
	// Two bare TLS relays back to back (tlschain.go), not warren.
	"tls-chain": {Name: "tls-chain"},
	// The same with one smux session between them (smuxchain.go).
	"smux-chain": {Name: "smux-chain"},
	"tcp":        {Name: "tcp", Transport: "tcp", TLS: true},
	"tcp-x4":     {Name: "tcp-x4", Transport: "tcp", TLS: true, Connections: 4},
	"kcp":        {Name: "kcp", Transport: "kcp", TLS: true},
	// kcp with a fixed rate (-kcp-rate) and unpaced, beside kcp (which
	// the lossy suite runs with "auto").
	"kcp-fixed":   {Name: "kcp-fixed", Transport: "kcp", TLS: true, KCPRate: "fixed"},
	"kcp-unpaced": {Name: "kcp-unpaced", Transport: "kcp", TLS: true, KCPRate: "0"},
	"kcp-fec":     {Name: "kcp-fec", Transport: "kcp", TLS: true, FEC: true},
	"tcp-plain":   {Name: "tcp-plain", Transport: "tcp"},
	"kcp-plain":   {Name: "kcp-plain", Transport: "kcp"},
}

// FEC settings of the kcp-fec path (the same on both sides, as they must be).
const fecData, fecParity = 10, 3

// buildWarren builds the daemon from the repository at root into dir: from
// its committed HEAD (a clean export, so that the figures belong to a
// commit), or, with worktree, from the files as they are.
func buildWarren(root, dir string, worktree bool) (string, error) {
	if worktree {
		return goBuild(root, filepath.Join(dir, "warren"))
	}
	return buildCommit(root, dir, "HEAD")
}

// buildCommit builds the daemon of commit (HEAD, a hash, a branch) of the
// repository at root, from a clean export into dir/src-COMMIT, as
// dir/warren (HEAD) or dir/warren-COMMIT.
func buildCommit(root, dir, commit string) (string, error) {
	name := "warren"
	if commit != "HEAD" {
		name += "-" + strings.ReplaceAll(commit, "/", "_")
	}
	src := filepath.Join(dir, "src-"+strings.ReplaceAll(commit, "/", "_"))
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	export := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := export.CombinedOutput(); err != nil {
		return "", fmt.Errorf("exporting %s of %s (use -worktree to build the files as they are): %v\n%s", commit, root, err, out)
	}
	return goBuild(src, filepath.Join(dir, name))
}

// goBuild builds ./cmd/warren of the source tree src into bin.
func goBuild(src, bin string) (string, error) {
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/warren")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/warren in %s: %v\n%s", src, err, out)
	}
	return bin, nil
}

// writeCert writes a self-signed ECDSA P-256 certificate (as warren makes
// its own) and returns the files and the fingerprint clients pin.
func writeCert(dir string) (certFile, keyFile, fingerprint string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "warren-bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"warren-bench"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", "", err
	}
	sum := sha256.Sum256(der)
	return certFile, keyFile, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// tunnelSpec is everything one server+client pair needs.
type tunnelSpec struct {
	Path        pathSpec
	Dir         string // config files and state go here
	TunnelAddr  string // the server listens here for the client
	PublicAddr  string // IP the public port binds to
	PublicPort  int
	Target      string // the backend, as the client dials it
	Cert, Key   string
	Fingerprint string
	Token       string
	DataShards  int
	Parity      int
	// KCPRate is [kcp] rate_mbit on both sides of kcp paths, as
	// written in TOML; "" leaves the default (0, unpaced).
	KCPRate string
	// CC is [tcp] congestion on both sides of tcp paths; "" leaves the
	// default. Warren's default, "auto", would pick bbr over the route's
	// congctl, which the lossy suite sets for the path's cc.
	CC string
	// ServerAdmin and ClientAdmin, when set, are the address of the
	// admin API ([server.admin], [client.admin]) in the process's
	// namespace: the pacing suite reads the KCP controller's state there.
	ServerAdmin, ClientAdmin string
	// Raw TOML written right after the [server] / [client] keys: more keys
	// of that table, and any sub-table the template does not write
	// (e.g. [server.mux], or [server.kcp] on paths without FEC).
	ExtraServer string
	ExtraClient string
	Env         []string // extra environment of both (e.g. GOGC=50)
	// UDP adds a UDP service on the same public port and target (udp.go).
	UDP bool
	// NoProbe: the target is not the bench backend; wait for the public
	// port to accept, not for an echo.
	NoProbe bool
}

var serverTmpl = template.Must(template.New("server").Parse(`# written by warren's bench tool
[server]
public_address = "{{.PublicAddr}}"
state_dir = "{{.Dir}}/state"
shutdown_timeout = "1s"
reconnect_grace = "0s"
{{if not .Path.TLS}}tls = false
{{end}}{{.ExtraServer}}
[[server.listen]]
transport = "{{.Path.Transport}}"
address = "{{.TunnelAddr}}"
{{if .Path.TLS}}
[server.tls]
cert = "{{.Cert}}"
key = "{{.Key}}"
{{end}}{{if or .DataShards .KCPRate}}
[server.kcp]
{{if .DataShards}}data_shards = {{.DataShards}}
parity_shards = {{.Parity}}
{{end}}{{if .KCPRate}}rate_mbit = {{.KCPRate}}
{{end}}{{end}}{{if .CC}}
[server.tcp]
congestion = "{{.CC}}"
{{end}}
[server.limits]
# The memory test holds 10 000 idle connections of the one service
# (the default cap is 4 096 a service).
max_streams_per_service = 16384

[server.log]
level = "warn"
{{if .ServerAdmin}}
[server.admin]
address = "{{.ServerAdmin}}"
{{end}}
[[server.clients]]
name = "bench"
token = "{{.Token}}"
ports = [{{.PublicPort}}]
{{if .UDP}}udp_ports = [{{.PublicPort}}]
{{end}}`))

var clientTmpl = template.Must(template.New("client").Parse(`# written by warren's bench tool
[client]
server = "{{.TunnelAddr}}"
transport = "{{.Path.Transport}}"
token = "{{.Token}}"
shutdown_timeout = "1s"
{{if .Path.Connections}}connections = {{.Path.Connections}}
{{end}}{{if not .Path.TLS}}tls = false
{{end}}{{.ExtraClient}}
{{if .Path.TLS}}
[client.tls]
fingerprint = "{{.Fingerprint}}"
server_name = "warren-bench"
{{end}}{{if or .DataShards .KCPRate}}
[client.kcp]
{{if .DataShards}}data_shards = {{.DataShards}}
parity_shards = {{.Parity}}
{{end}}{{if .KCPRate}}rate_mbit = {{.KCPRate}}
{{end}}{{end}}{{if .CC}}
[client.tcp]
congestion = "{{.CC}}"
{{end}}
[client.log]
level = "warn"
{{if .ClientAdmin}}
[client.admin]
address = "{{.ClientAdmin}}"
{{end}}
[[client.services]]
name = "bench"
target = "{{.Target}}"
remote_port = {{.PublicPort}}
{{if .UDP}}
[[client.services]]
name = "bench-udp"
target = "{{.Target}}"
remote_port = {{.PublicPort}}
protocol = "udp"
{{end}}`))

func writeConfigs(t *tunnelSpec) (serverFile, clientFile string, err error) {
	if t.Path.FEC {
		t.DataShards, t.Parity = fecData, fecParity
	}
	if t.Path.Transport != "kcp" {
		t.KCPRate = ""
	}
	if t.Path.Transport != "tcp" {
		t.CC = ""
	}
	if err := os.MkdirAll(filepath.Join(t.Dir, "state"), 0o700); err != nil {
		return "", "", err
	}
	write := func(name string, tm *template.Template) (string, error) {
		var b strings.Builder
		if err := tm.Execute(&b, t); err != nil {
			return "", err
		}
		f := filepath.Join(t.Dir, name)
		return f, os.WriteFile(f, []byte(b.String()), 0o600)
	}
	if serverFile, err = write("server.toml", serverTmpl); err != nil {
		return "", "", err
	}
	clientFile, err = write("client.toml", clientTmpl)
	return serverFile, clientFile, err
}

// tunnel is a running server+client pair.
type tunnel struct {
	server, client *proc
	public         string // host:port of the public port
}

func (t *tunnel) stop() {
	if t == nil {
		return
	}
	t.client.stop(5 * time.Second)
	t.server.stop(5 * time.Second)
}

// startTunnel starts the server (in serverNS) and the client (in clientNS)
// and waits until the public port echoes through the tunnel.
func startTunnel(warren string, spec *tunnelSpec, serverNS, clientNS string, lg *lgClient) (*tunnel, error) {
	sf, cf, err := writeConfigs(spec)
	if err != nil {
		return nil, err
	}
	logDir := spec.Dir
	srv, _, err := startProc("server", serverNS, logDir, false, spec.Env, warren, "server", "-c", sf)
	if err != nil {
		return nil, err
	}
	t := &tunnel{server: srv, public: net.JoinHostPort(spec.PublicAddr, fmt.Sprint(spec.PublicPort))}
	time.Sleep(200 * time.Millisecond) // let it bind before the client's first dial
	cli, _, err := startProc("client", clientNS, logDir, false, spec.Env, warren, "client", "-c", cf)
	if err != nil {
		srv.stop(time.Second)
		return nil, err
	}
	t.client = cli
	if spec.NoProbe {
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", t.public, time.Second)
			if err == nil {
				c.Close()
				return t, nil
			}
			if time.Now().After(deadline) {
				t.stop()
				return nil, fmt.Errorf("tunnel %s never came up: %v", spec.Path.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if _, err := lg.do(lgRequest{Op: "probe", Addr: t.public, Duration: 20 * time.Second}, nil); err != nil {
		t.stop()
		return nil, fmt.Errorf("tunnel %s never came up: %v\nserver log:\n%s\nclient log:\n%s", spec.Path.Name, err, srv.tail(), cli.tail())
	}
	return t, nil
}

// freePort returns a port free for both TCP and UDP on loopback.
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port")
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}
