//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	browserChromium = "/usr/bin/chromium"
	browserTimeout  = 90 * time.Second
)

// TestBrowserClient drives a real headless Chromium against the all-in-one topology
// (web/e2e/chat.mjs via playwright-core): a page served from another origin logs two
// users in with fetch (CORS preflights), opens the browser's own WebSockets and chats
// in the world room and in a 1:1 conversation, the way the Vue client does.
//
// Needs /usr/bin/chromium (Debian package chromium), node and `npm ci` in web/e2e; it
// skips without them, except under CI=true where they are required (.ci/run installs
// them). GOCHAT_BROWSER_ONE_TO_ONE=false runs chat.mjs with --one-to-one=false.
func TestBrowserClient(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test starts a whole topology and Chromium")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "web", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	if _, err := os.Stat(browserChromium); err != nil {
		missing = append(missing, browserChromium+" (apt-get install chromium)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node in PATH")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "web/e2e/node_modules/playwright-core (cd web/e2e && npm ci)")
	}
	if len(missing) > 0 {
		msg := "BROWSER TEST NOT RUN: missing " + strings.Join(missing, ", ")
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatal(msg + " (required when CI=true; .ci/run installs them)")
		}
		t.Skip("!!! " + msg + " !!!")
	}

	c := startAll(t)
	_, port, err := net.SplitHostPort(c.gateways[0])
	if err != nil {
		t.Fatal(err)
	}
	// The page comes from another origin (another port) and another host spelling than
	// the API: 127.0.0.1 for the page, localhost for the API, as contract.md §1 describes.
	pageFile := filepath.Join(dir, "page.html")
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/page.html" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFile(w, r, pageFile)
	}))
	t.Cleanup(pages.Close)

	args := []string{filepath.Join(dir, "chat.mjs"),
		"--api", "http://localhost:" + port + "/api",
		"--ws", "ws://localhost:" + port + "/ws",
		"--page", pages.URL + "/page.html",
		"--chromium", browserChromium,
	}
	if v := os.Getenv("GOCHAT_BROWSER_ONE_TO_ONE"); v != "" {
		args = append(args, "--one-to-one="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	// node and the Chromium it launches share a process group; a timeout kills all of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := new(browserOutput)
	cmd.Stdout = browserStream{out, true}
	cmd.Stderr = browserStream{out, false}

	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start)
	// Whatever happens, no Chromium of ours outlives the test.
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}

	var summary struct {
		OK    bool   `json:"ok"`
		Step  string `json:"step"`
		Error string `json:"error"`
	}
	var summaryLine string
	sc := bufio.NewScanner(bytes.NewReader(out.stdout.Bytes()))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "{") {
			summaryLine = l
		}
	}
	parseErr := json.Unmarshal([]byte(summaryLine), &summary)

	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		t.Errorf("chat.mjs did not finish within %s", browserTimeout)
	case runErr != nil:
		t.Errorf("chat.mjs failed after %s: %v", took.Round(time.Millisecond), runErr)
	case parseErr != nil || !summary.OK:
		t.Errorf("chat.mjs exited 0 without an ok summary line: %q", summaryLine)
	}
	if summary.Error != "" {
		t.Errorf("browser scenario failed in step %q: %s", summary.Step, summary.Error)
	}
	if t.Failed() {
		t.Logf("--- chat.mjs output (%s) ---\n%s", took.Round(time.Millisecond), out.all.String())
		return
	}
	t.Logf("browser scenario passed in %s: %s", took.Round(time.Millisecond), summaryLine)
}

// browserOutput keeps chat.mjs's stdout (for the summary line) and stdout+stderr
// interleaved (for the log on failure); exec copies each pipe in its own goroutine.
type browserOutput struct {
	mu          sync.Mutex
	stdout, all bytes.Buffer
}

type browserStream struct {
	o        *browserOutput
	isStdout bool
}

func (w browserStream) Write(p []byte) (int, error) {
	w.o.mu.Lock()
	defer w.o.mu.Unlock()
	if w.isStdout {
		w.o.stdout.Write(p)
	}
	return w.o.all.Write(p)
}
