package main

import (
	"slices"
	"testing"
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
