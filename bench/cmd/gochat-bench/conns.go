package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// runConns opens N authenticated WebSockets against one gateway, keeps them idle for
// -hold, and reports connects/s, handshake percentiles and, given the gateway's pid,
// its RSS growth per socket (/proc/<pid>/status VmRSS before and after).
func runConns(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "gateway base URL")
	n := fs.Int("n", 1000, "sockets to open")
	users := fs.Int("users", 50, "guest accounts to spread the sockets over (several sockets per user is normal)")
	par := fs.Int("c", 64, "concurrent dials")
	hold := fs.Duration("hold", 5*time.Second, "how long to keep the sockets idle before measuring")
	pid := fs.Int("pid", 0, "gateway process id, for RSS per socket (0 = skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *n < 1 || *users < 1 || *par < 1 {
		return errors.New("-n, -users and -c must be positive")
	}
	u, err := url.Parse(*base)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	tokens := make([]string, *users)
	for i := range tokens {
		if tokens[i], err = guestToken(*base); err != nil {
			return err
		}
	}
	rssBefore, _ := rssKiB(*pid)

	wsURL := "ws://" + u.Host + "/ws?token="
	conns := make([]*websocket.Conn, *n)
	lat := make([]time.Duration, *n)
	var failed atomic.Int64
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= *n {
					return
				}
				t0 := time.Now()
				c, _, err := websocket.DefaultDialer.Dial(wsURL+tokens[i%len(tokens)], nil)
				if err == nil {
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, _, err = c.ReadMessage() // the connected frame
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = time.Since(t0)
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	ok := *n - int(failed.Load())
	// Keep the sockets open and answer pings; the read loop is one goroutine per socket
	// here, which is fine at this scale.
	for _, c := range conns {
		if c != nil {
			_ = c.SetReadDeadline(time.Time{})
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}
	}
	time.Sleep(*hold)
	runtime.GC()
	rssAfter, rssErr := rssKiB(*pid)

	var ls []time.Duration
	for _, l := range lat {
		if l > 0 {
			ls = append(ls, l)
		}
	}
	slices.Sort(ls)
	fmt.Fprintf(stdout, "conns: opened %d/%d in %s (%.0f connects/s), failures %d\n", ok, *n, elapsed.Round(time.Millisecond), float64(ok)/elapsed.Seconds(), failed.Load())
	if len(ls) > 0 {
		fmt.Fprintf(stdout, "handshake (dial+upgrade+connected frame): p50 %s p99 %s max %s\n",
			pct(ls, 0.50), pct(ls, 0.99), ls[len(ls)-1].Round(time.Microsecond))
	}
	if *pid > 0 && rssErr == nil {
		delta := rssAfter - rssBefore
		fmt.Fprintf(stdout, "gateway pid %d RSS: before %d KiB, after %d KiB, delta %d KiB = %.2f KiB per socket\n",
			*pid, rssBefore, rssAfter, delta, float64(delta)/float64(max(ok, 1)))
	}
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d connections failed", failed.Load())
	}
	return nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))].Round(time.Microsecond)
}

func guestToken(base string) (string, error) {
	resp, err := http.Post(base+"/api/auth/guest", "application/json", bytes.NewReader([]byte(`{"guestName":""}`)))
	if err != nil {
		return "", fmt.Errorf("guest login: %w", err)
	}
	defer resp.Body.Close()
	var env struct {
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || env.Data.Token == "" {
		return "", fmt.Errorf("guest login: status %d", resp.StatusCode)
	}
	return env.Data.Token, nil
}

// rssKiB reads VmRSS of a process.
func rssKiB(pid int) (int64, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}
