package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of docker-compose.yml this test understands.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     any               `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		DependsOn   map[string]any    `yaml:"depends_on"`
	} `yaml:"services"`
}

// docker compose cannot run on this machine, so the file is checked statically: the
// infrastructure uses official images, every gochat service runs one target with a
// configuration gochat itself accepts, every address it names points at a service of
// the file on a port that service serves, and host ports do not collide.
func TestDockerCompose(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	infra := map[string]struct {
		image string
		port  string
	}{
		"etcd":  {"quay.io/coreos/etcd:", "2379"},
		"kafka": {"apache/kafka:", "9092"},
		"redis": {"redis:", "6379"},
		"mysql": {"mysql:8", "3306"},
	}
	for name, want := range infra {
		s, ok := cf.Services[name]
		if !ok {
			t.Fatalf("service %s missing", name)
		}
		if !strings.HasPrefix(s.Image, want.image) {
			t.Errorf("service %s image %q, want official %s*", name, s.Image, want.image)
		}
	}
	if env := cf.Services["kafka"].Environment; !strings.Contains(env["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka must run in KRaft mode (process roles broker,controller), got %q", env["KAFKA_PROCESS_ROLES"])
	}

	hostPorts := map[string]string{}
	targets := map[string]bool{}
	for name, s := range cf.Services {
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			if other, dup := hostPorts[host]; dup {
				t.Errorf("host port %s used by %s and %s", host, other, name)
			}
			hostPorts[host] = name
		}
		if _, isInfra := infra[name]; isInfra {
			continue
		}
		if s.Build == nil {
			t.Errorf("gochat service %s has no build", name)
		}
		args := commandArgs(t, s.Command)
		var environ []string
		for k, v := range s.Environment {
			environ = append(environ, k+"="+os.Expand(v, func(string) string { return "0123456789abcdef-compose" }))
		}
		cfg, _, err := Load(args, environ, &bytes.Buffer{})
		if err != nil {
			t.Errorf("service %s: gochat rejects its configuration: %v", name, err)
			continue
		}
		ts, _ := expandTargets(cfg.Target)
		if len(ts) != 1 || ts[0] != name {
			t.Errorf("service %s runs targets %v, want [%s]", name, ts, name)
		}
		targets[name] = true
		// Every host:port it dials must be a compose service serving that port.
		addrs := slices.Clone(cfg.Etcd.Endpoints)
		addrs = append(addrs, cfg.Kafka.Brokers...)
		if cfg.Redis.Addr != "" {
			addrs = append(addrs, cfg.Redis.Addr)
		}
		if cfg.Store.Driver == "mysql" {
			i, j := strings.Index(cfg.Store.DSN, "tcp("), strings.Index(cfg.Store.DSN, ")/")
			if i < 0 || j < i {
				t.Errorf("service %s: store dsn %q has no tcp(host:port)", name, cfg.Store.DSN)
			} else {
				addrs = append(addrs, cfg.Store.DSN[i+4:j])
			}
		}
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				t.Errorf("service %s: address %q: %v", name, a, err)
				continue
			}
			want, ok := infra[host]
			if !ok || want.port != port {
				t.Errorf("service %s dials %s, which is not a compose service on that port", name, a)
			}
			if _, ok := s.DependsOn[host]; !ok {
				t.Errorf("service %s dials %s but does not depend on it", name, host)
			}
		}
	}
	for _, want := range allTargets {
		if !targets[want] {
			t.Errorf("no compose service runs target %s", want)
		}
	}
	if hostPorts["8080"] != "gateway" {
		t.Errorf("host port 8080 belongs to %q, want gateway", hostPorts["8080"])
	}
}

func commandArgs(t *testing.T, c any) []string {
	t.Helper()
	switch v := c.(type) {
	case []any:
		out := make([]string, len(v))
		for i, a := range v {
			out[i] = fmt.Sprint(a)
		}
		return out
	case string:
		return strings.Fields(v)
	case nil:
		return nil
	}
	t.Fatalf("unexpected command %T", c)
	return nil
}
