package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLevelsFor(t *testing.T) {
	got := levelsFor([]int{1, 50, 200, 201, 400, 1000}, 200)
	want := []level{{1, 1}, {50, 1}, {200, 1}, {200, 2}, {200, 2}, {200, 5}}
	if !slices.Equal(got, want) {
		t.Fatalf("levelsFor = %v, want %v", got, want)
	}
}

func TestPositiveList(t *testing.T) {
	got, err := positiveList("inflight", "25, 50,100")
	if err != nil || !slices.Equal(got, []int{25, 50, 100}) {
		t.Fatalf("positiveList = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,-2", "1,,2", "x"} {
		if _, err := positiveList("inflight", bad); err == nil {
			t.Errorf("positiveList(%q) accepted", bad)
		}
	}
}

// serverStages sums the stage histograms' samples over the admins, labels and all;
// stagesBetween turns two readings into means and leaves out a stage with no
// observations (repo behind no admin in a split topology).
func TestServerStages(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/metrics" {
				fmt.Fprint(w, body)
			}
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	gw := func(sum, n float64) string {
		return fmt.Sprintf("%s %g\n%s %g\ngochat_gateway_send_seconds_sum{result=\"error\"} 99\n", gwSendSum, sum, gwSendCount, n)
	}
	all := func(sum, n, commits, commitSecs, msgs float64) string {
		return gw(sum, n) + fmt.Sprintf("%s %g\n%s %g\n%s %g\n%s %g\n%s %g\n",
			logicSendSum, sum/2, logicSendN, n, commitSum, commitSecs, commitCount, commits, commitMsgsSum, msgs)
	}
	ctx := context.Background()
	a, err := serverStages(ctx, []string{serve(all(1, 100, 10, 0.01, 100)), serve(gw(2, 100))})
	if err != nil {
		t.Fatal(err)
	}
	b, err := serverStages(ctx, []string{serve(all(3, 200, 30, 0.05, 900)), serve(gw(4, 300))})
	if err != nil {
		t.Fatal(err)
	}
	got := stagesBetween(a, b, 2*time.Second)
	// gateways: 4 s over 300 sends; logic: 1 s over 100; commits: 40 ms over 20
	// commits of 800 messages, 2% of 2 s.
	want := stageMeans{GatewaySendMs: 4.0 / 300 * 1e3, LogicSendMs: 10, CommitMs: 2, CommitMessages: 40, WriterBusy: 0.02}
	if math.Abs(got.GatewaySendMs-want.GatewaySendMs) > 1e-9 || math.Abs(got.LogicSendMs-want.LogicSendMs) > 1e-9 ||
		math.Abs(got.CommitMs-want.CommitMs) > 1e-9 || math.Abs(got.CommitMessages-want.CommitMessages) > 1e-9 || math.Abs(got.WriterBusy-want.WriterBusy) > 1e-9 {
		t.Fatalf("stagesBetween = %+v, want %+v", got, want)
	}
	gwOnly := stagesBetween(map[string]float64{gwSendSum: 1, gwSendCount: 10}, map[string]float64{gwSendSum: 2, gwSendCount: 20}, time.Second)
	if gwOnly.GatewaySendMs != 100 || gwOnly.LogicSendMs != 0 || gwOnly.CommitMs != 0 || gwOnly.WriterBusy != 0 {
		t.Fatalf("gateway-only stages = %+v", gwOnly)
	}
}

// pickSteps judges the rate on the fastest qualifying step and latency at the rate on
// the qualifying step that reached it with the lowest recipient p50; steps with ack
// p99 ≥ 50 ms or unacked sends qualify for neither.
func TestPickSteps(t *testing.T) {
	steps := []step{
		{InFlight: 25, Acked: 1, AcksPerS: 7000, AckP99: 11, RecipP50: 3, RecipP99: 11},
		{InFlight: 50, Acked: 1, AcksPerS: 10100, AckP99: 16, RecipP50: 4.3, RecipP99: 16},
		{InFlight: 100, Acked: 1, AcksPerS: 11900, AckP99: 24, RecipP50: 7.4, RecipP99: 23},
		{InFlight: 200, Acked: 1, AcksPerS: 13500, AckP99: 47, RecipP50: 13, RecipP99: 36},
		{InFlight: 400, Acked: 1, AcksPerS: 14000, AckP99: 55, RecipP50: 25, RecipP99: 60},
		{InFlight: 800, Acked: 1, AcksPerS: 15000, AckP99: 20, Unacked: 3, RecipP50: 2, RecipP99: 9},
	}
	if best, at := pickSteps(steps, 10000); best != 3 || at != 1 {
		t.Fatalf("pickSteps = best %d, at %d; want 3, 1", best, at)
	}
	if best, at := pickSteps(steps, 20000); best != 3 || at != -1 {
		t.Fatalf("pickSteps above every step = best %d, at %d; want 3, -1", best, at)
	}
	// Equal p50: the lower p99 wins.
	tie := []step{
		{Acked: 1, AcksPerS: 10500, AckP99: 30, RecipP50: 4, RecipP99: 40},
		{Acked: 1, AcksPerS: 10200, AckP99: 20, RecipP50: 4, RecipP99: 20},
	}
	if best, at := pickSteps(tie, 10000); best != 0 || at != 1 {
		t.Fatalf("pickSteps tie = best %d, at %d; want 0, 1", best, at)
	}
	if best, at := pickSteps([]step{{Acked: 0}, {Acked: 5, AckP99: 80}}, 10000); best != -1 || at != -1 {
		t.Fatalf("pickSteps with no qualifying step = %d, %d", best, at)
	}
}
