package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExpandTargets(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "all", in: "all", want: []string{"gateway", "logic", "repo", "task"}},
		{name: "subset dedup", in: "task,logic,task", want: []string{"logic", "task"}},
		{name: "spaces", in: " gateway , repo ", want: []string{"gateway", "repo"}},
		{name: "all plus one", in: "all,gateway", want: []string{"gateway", "logic", "repo", "task"}},
		{name: "unknown", in: "gateway,bogus", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expandTargets(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("expandTargets(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("expandTargets(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gochat.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "gateway:\n  addr: \":7001\"\n  max_body: 2048\nlogic:\n  max_content: 100\n")
	cfg, _, err := Load(
		[]string{"-config", file, "-gateway.addr", ":7003"},
		[]string{"GOCHAT_GATEWAY_ADDR=:7002", "GOCHAT_LOGIC_MAX_CONTENT=200", "GOCHAT_KAFKA_BROKERS=a:1, b:2", "PATH=/bin"},
		&bytes.Buffer{},
	)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.Addr != ":7003" {
		t.Errorf("gateway.addr = %q, want the flag's :7003", cfg.Gateway.Addr)
	}
	if cfg.Logic.MaxContent != 200 {
		t.Errorf("logic.max_content = %d, want env's 200 over the file's 100", cfg.Logic.MaxContent)
	}
	if cfg.Gateway.MaxBody != 2048 {
		t.Errorf("gateway.max_body = %d, want the file's 2048", cfg.Gateway.MaxBody)
	}
	if !slices.Equal(cfg.Kafka.Brokers, []string{"a:1", "b:2"}) {
		t.Errorf("kafka.brokers = %v", cfg.Kafka.Brokers)
	}
	if cfg.Gateway.PingInterval != 30*time.Second {
		t.Errorf("gateway.ping_interval = %s, want the default 30s", cfg.Gateway.PingInterval)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     []string
		errPart string
	}{
		{"unknown yaml key", []string{"-config", "FILE:gateway:\n  max_sockets: 5\n"}, nil, "max_sockets"},
		{"unknown env", nil, []string{"GOCHAT_GATEWAY_ADRR=:1"}, "GOCHAT_GATEWAY_ADRR"},
		{"bad duration", []string{"-gateway.ping_interval", "soon"}, nil, "ping_interval"},
		{"bad target", []string{"-target", "gateway,web"}, nil, "unknown target"},
		{"split needs etcd", []string{"-target", "gateway"}, nil, "etcd.endpoints"},
		{"split repo needs mysql", []string{"-target", "repo", "-etcd.endpoints", "x:1"}, nil, "store.driver=mysql"},
		{"short secret", []string{"-auth.secret", "short"}, nil, "auth.secret"},
		{"positional", []string{"extra"}, nil, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := slices.Clone(tt.args)
			for i, a := range args {
				if body, ok := strings.CutPrefix(a, "FILE:"); ok {
					args[i] = writeFile(t, body)
				}
			}
			_, _, err := Load(args, tt.env, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.errPart) {
				t.Fatalf("Load err = %v, want it to mention %q", err, tt.errPart)
			}
		})
	}
}

func TestSplitConfigValid(t *testing.T) {
	_, _, err := Load([]string{"-target", "repo,logic"}, []string{
		"GOCHAT_ETCD_ENDPOINTS=127.0.0.1:2379", "GOCHAT_AUTH_SECRET=0123456789abcdef0123",
		"GOCHAT_KAFKA_BROKERS=127.0.0.1:9092", "GOCHAT_STORE_DRIVER=mysql",
		"GOCHAT_STORE_DSN=u:p@tcp(127.0.0.1:3306)/gochat", "GOCHAT_REDIS_ADDR=127.0.0.1:6379",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("complete split config rejected: %v", err)
	}
}

func TestPrintConfigRedacts(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-print-config", "-store.driver", "mysql", "-store.dsn", "root:hunter2@tcp(db:3306)/gochat"},
		[]string{"GOCHAT_AUTH_SECRET=super-secret-value-123", "GOCHAT_REDIS_PASSWORD=redispw"}, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, secret := range []string{"hunter2", "super-secret-value-123", "redispw"} {
		if strings.Contains(s, secret) {
			t.Errorf("-print-config leaked %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"target: all", "addr: :8080", "dsn: root:<redacted>@tcp(db:3306)/gochat"} {
		if !strings.Contains(s, want) {
			t.Errorf("-print-config lacks %q:\n%s", want, s)
		}
	}
}
