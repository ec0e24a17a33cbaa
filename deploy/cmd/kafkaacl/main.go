// Command kafkaacl gives every service of the list (deploy/servicelist) that uses Kafka its own
// SASL/SCRAM-SHA-512 user and least-privilege ACLs on a cluster that authorizes
// (allow.everyone.if.no.acl.found=false), connecting as the super user admin. `INFRA_AUTH=1 infra.sh up`
// runs it after Kafka started.
//
//	kafkaacl -brokers 127.0.0.1:19092 -secrets .run/infra/secrets [-root .]
//
// The passwords are files of the -secrets folder: kafka-admin (the super user's, set when the storage
// was formatted) and kafka-<service> for each service (infra.sh draws them). A service's ACLs come from
// its service.yaml, all on literal names and any host:
//
//	kafka_writes  Write, Create  its events topic and the dead-letter topics of what it reads
//	kafka_reads   Read           the topics it consumes
//	kafka_groups  Read           its consumer groups
//
// (Read and Write imply Describe.) Nothing else: no wildcard, no cluster permission, no other topic.
// ACLs of a service user that its service.yaml no longer lists are deleted, so the cluster says what
// the list says. Running it again is harmless; it rewrites the credentials with a new salt.
package main

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Admin is the super user (super.users=User:admin) kafkaacl connects as.
const Admin = "admin"

// scramIterations is Kafka's default (and minimum) for SCRAM-SHA-512.
const scramIterations = 4096

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kafkaacl:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kafkaacl", flag.ContinueOnError)
	fs.SetOutput(stdout)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, comma-separated")
	secrets := fs.String("secrets", "", "folder of the password files kafka-admin and kafka-<service>")
	root := fs.String("root", ".", "repository root (services/*/service.yaml)")
	timeout := fs.Duration("timeout", time.Minute, "bound of the whole command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *brokers == "" || *secrets == "" || fs.NArg() > 0 {
		return errors.New("usage: kafkaacl -brokers host:port[,…] -secrets DIR [-root REPO]")
	}
	list, err := servicelist.Load(*root)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	adminAuth, err := credential(*secrets, Admin)
	if err != nil {
		return err
	}
	addr := kafka.TCP(strings.Split(*brokers, ",")...)
	c := &kafka.Client{Addr: addr, Timeout: 10 * time.Second, Transport: kafkaauth.Transport(adminAuth)}

	var users []kafka.UserScramCredentialsUpsertion
	var want []kafka.ACLEntry
	var names []string
	for _, s := range list {
		if !s.Kafka {
			continue
		}
		pw, err := password(*secrets, s.Name)
		if err != nil {
			return err
		}
		u, err := upsertion(s.Name, pw)
		if err != nil {
			return err
		}
		users = append(users, u)
		want = append(want, ACLs(s)...)
		names = append(names, s.Name)
	}
	if len(users) == 0 {
		fmt.Fprintln(stdout, "kafkaacl: no service uses Kafka")
		return nil
	}
	ur, err := c.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{Upsertions: users})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	for _, r := range ur.Results {
		if r.Error != nil {
			return fmt.Errorf("user %s: %w", r.User, r.Error)
		}
	}
	deleted, err := deleteStale(ctx, c, names, want)
	if err != nil {
		return err
	}
	cr, err := c.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: want})
	if err != nil {
		return fmt.Errorf("acls: %w", err)
	}
	if err := errors.Join(cr.Errors...); err != nil {
		return fmt.Errorf("acls: %w", err)
	}
	// The credentials reach the broker through the metadata log: wait until each user logs in.
	for _, n := range names {
		if err := waitLogin(ctx, addr, *secrets, n); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "kafkaacl: users %s; %d ACLs (%d stale deleted)\n", strings.Join(names, ", "), len(want), deleted)
	return nil
}

// ACLs returns the service's ACL entries (see the command's doc).
func ACLs(s servicelist.Service) []kafka.ACLEntry {
	var out []kafka.ACLEntry
	add := func(rt kafka.ResourceType, name string, ops ...kafka.ACLOperationType) {
		for _, op := range ops {
			out = append(out, kafka.ACLEntry{ResourceType: rt, ResourceName: name, ResourcePatternType: kafka.PatternTypeLiteral,
				Principal: "User:" + s.Name, Host: "*", Operation: op, PermissionType: kafka.ACLPermissionTypeAllow})
		}
	}
	for _, t := range s.KafkaWrites {
		add(kafka.ResourceTypeTopic, t, kafka.ACLOperationTypeWrite, kafka.ACLOperationTypeCreate)
	}
	for _, t := range s.KafkaReads {
		add(kafka.ResourceTypeTopic, t, kafka.ACLOperationTypeRead)
	}
	for _, g := range s.KafkaGroups {
		add(kafka.ResourceTypeGroup, g, kafka.ACLOperationTypeRead)
	}
	return out
}

// deleteStale deletes the ACLs of the service users that want does not hold.
func deleteStale(ctx context.Context, c *kafka.Client, users []string, want []kafka.ACLEntry) (int, error) {
	keep := map[kafka.ACLEntry]bool{}
	for _, e := range want {
		keep[e] = true
	}
	var stale []kafka.DeleteACLsFilter
	for _, u := range users {
		d, err := c.DescribeACLs(ctx, &kafka.DescribeACLsRequest{Filter: kafka.ACLFilter{
			ResourceTypeFilter: kafka.ResourceTypeAny, ResourcePatternTypeFilter: kafka.PatternTypeAny,
			PrincipalFilter: "User:" + u, Operation: kafka.ACLOperationTypeAny, PermissionType: kafka.ACLPermissionTypeAny}})
		if err != nil {
			return 0, fmt.Errorf("describe acls of %s: %w", u, err)
		}
		if d.Error != nil {
			return 0, fmt.Errorf("describe acls of %s: %w", u, d.Error)
		}
		for _, r := range d.Resources {
			for _, a := range r.ACLs {
				e := kafka.ACLEntry{ResourceType: r.ResourceType, ResourceName: r.ResourceName, ResourcePatternType: r.PatternType,
					Principal: a.Principal, Host: a.Host, Operation: a.Operation, PermissionType: a.PermissionType}
				if !keep[e] {
					stale = append(stale, kafka.DeleteACLsFilter{ResourceTypeFilter: e.ResourceType, ResourceNameFilter: e.ResourceName,
						ResourcePatternTypeFilter: e.ResourcePatternType, PrincipalFilter: e.Principal, HostFilter: e.Host,
						Operation: e.Operation, PermissionType: e.PermissionType})
				}
			}
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	r, err := c.DeleteACLs(ctx, &kafka.DeleteACLsRequest{Filters: stale})
	if err != nil {
		return 0, fmt.Errorf("delete stale acls: %w", err)
	}
	for _, res := range r.Results {
		if res.Error != nil {
			return 0, fmt.Errorf("delete stale acls: %w", res.Error)
		}
	}
	return len(stale), nil
}

// waitLogin retries a metadata request as user until the broker accepts its credential.
func waitLogin(ctx context.Context, addr net.Addr, dir, user string) error {
	auth, err := credential(dir, user)
	if err != nil {
		return err
	}
	c := &kafka.Client{Addr: addr, Timeout: 5 * time.Second, Transport: kafkaauth.Transport(auth)}
	for {
		_, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("user %s cannot log in: %w", user, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func password(dir, user string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kafka-"+user))
	if err != nil {
		return "", fmt.Errorf("password of %s: %w", user, err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("password of %s: empty file", user)
	}
	return pw, nil
}

func credential(dir, user string) (sasl.Mechanism, error) {
	pw, err := password(dir, user)
	if err != nil {
		return nil, err
	}
	return kafkaauth.Mechanism(user, pw)
}

// upsertion is user's SCRAM-SHA-512 credential: a fresh salt and the salted password (RFC 5802 Hi).
func upsertion(user, pw string) (kafka.UserScramCredentialsUpsertion, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return kafka.UserScramCredentialsUpsertion{}, err
	}
	salted, err := pbkdf2.Key(sha512.New, pw, salt, scramIterations, sha512.Size)
	if err != nil {
		return kafka.UserScramCredentialsUpsertion{}, err
	}
	return kafka.UserScramCredentialsUpsertion{Name: user, Mechanism: kafka.ScramMechanismSha512,
		Iterations: scramIterations, Salt: salt, SaltedPassword: salted}, nil
}
