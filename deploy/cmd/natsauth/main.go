// Command natsauth prints the NATS server's authorization block for an authenticating server: the
// super user admin (no restriction: tests, tools such as dlq) and one user per service of the list
// (deploy/servicelist) that uses NATS, with the permissions its service.yaml gives (nats_subjects,
// nats_stream: servicelist.Service.NATSPermissions). `INFRA_AUTH=1 infra.sh up` includes its output in
// nats.conf; servicegen writes the same users, with $VARIABLE passwords, into compose's and the
// Kubernetes dev overlay's nats.conf.
//
//	natsauth -secrets .run/infra/secrets [-root .]
//
// The passwords are files of the -secrets folder: nats-admin and nats-<service> (infra.sh draws them).
// The output holds them: write it to a file only the server's user reads.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "natsauth:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("natsauth", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	secrets := fs.String("secrets", "", "folder of the password files nats-admin and nats-<service>")
	root := fs.String("root", ".", "repository root (services/*/service.yaml)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secrets == "" || fs.NArg() > 0 {
		return errors.New("usage: natsauth -secrets DIR [-root REPO]")
	}
	list, err := servicelist.Load(*root)
	if err != nil {
		return err
	}
	admin, err := password(*secrets, "admin")
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	fmt.Fprintf(&b, "    { user: admin, password: %s }\n", strconv.Quote(admin))
	for _, s := range list {
		if !s.NATS {
			continue
		}
		pw, err := password(*secrets, s.Name)
		if err != nil {
			return err
		}
		b.WriteString(s.NATSUser(strconv.Quote(pw), "    "))
	}
	b.WriteString("  ]\n}\n")
	_, err = io.WriteString(stdout, b.String())
	return err
}

// password reads dir/nats-<user>.
func password(dir, user string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "nats-"+user))
	if err != nil {
		return "", fmt.Errorf("password of %s: %w", user, err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("password of %s: empty file", user)
	}
	return pw, nil
}
