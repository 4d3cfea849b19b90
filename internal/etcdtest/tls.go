package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Files are PEM files a test wrote: a CA, and a certificate with its key
// signed by it.
type Files struct {
	CA, Cert, Key string
}

// CA issues certificates for a test's etcd and its clients.
type CA struct {
	t    testing.TB
	dir  string
	file string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

// NewTLS writes, in the test's temp dir, a CA and a server certificate for
// 127.0.0.1 (the etcd side: Start's serverTLS requires client
// certificates from the same CA), and a client certificate from that CA
// whose common name is "root" (with etcd's auth on, the common name is
// the etcd user).
func NewTLS(t testing.TB) (server *TLS, client Files, ca *CA) {
	t.Helper()
	ca = &CA{t: t, dir: t.TempDir(), key: newKey(t), n: 1}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.file = write(t, ca.dir, "ca.pem", "CERTIFICATE", der)
	sc, sk := ca.leaf("server", x509.ExtKeyUsageServerAuth)
	client = ca.Client("root")
	return &TLS{CertFile: sc, KeyFile: sk, ClientCA: ca.file, client: &client}, client, ca
}

// Client issues a client certificate whose common name is cn.
func (ca *CA) Client(cn string) Files {
	cert, key := ca.leaf(cn, x509.ExtKeyUsageClientAuth)
	return Files{CA: ca.file, Cert: cert, Key: key}
}

func (ca *CA) leaf(cn string, usage x509.ExtKeyUsage) (cert, key string) {
	t := ca.t
	ca.n++
	k := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.n),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return write(t, ca.dir, cn+".pem", "CERTIFICATE", der), write(t, ca.dir, cn+"-key.pem", "EC PRIVATE KEY", kder)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func write(t testing.TB, dir, name, typ string, der []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
