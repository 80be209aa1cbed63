package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bwmarrin/snowflake"

	"github.com/gochat/gochat/repo/repotest"
)

// The contract below runs once per driver, each case on a fresh database:
// a temporary SQLite file, and a fresh database on the MariaDB/MySQL of this
// machine (skipped loudly when unreachable, fatal with CI=true).

type testDriver struct {
	name string
	dsn  func(testing.TB) string
}

func testDrivers() []testDriver {
	return []testDriver{
		{name: DriverSQLite, dsn: repotest.SQLiteDSN},
		{name: DriverMySQL, dsn: repotest.MySQLDSN},
	}
}

type contractCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

func contractCases() []contractCase {
	return []contractCase{
		{"Users", testUsers},
		{"AppendAssignsGapFreeSeq", testAppendGapFree},
		{"AppendValidates", testAppendValidates},
		{"DedupeSequential", testDedupeSequential},
		{"DedupeConcurrent", testDedupeConcurrent},
		{"BatchRoundTripsValues", testBatchRoundTrips},
		{"ConcurrentAppends", testConcurrentAppends},
		{"FullBatchCommitsWithoutWaitingForWindow", testFullBatch},
		{"MissingConversationBurnsNoSeq", testMissingConversation},
		{"FailedBatchFallsBackPerItem", testFailedBatchFallback},
		{"ConstraintViolationRollsBackBatch", testConstraintViolation},
		{"CommitObserver", testCommitObserver},
		{"ResendInUncheckedBatchIsRechecked", testUncheckedResend},
		{"PanicInBatchDoesNotStrandFollowers", testPanicInBatch},
		{"FollowerCancelWithdraws", testFollowerCancel},
		{"LeaderCancelStillCommitsFollowers", testLeaderCancel},
		{"AppendManyAcrossBatches", testAppendMany},
		{"AppendManyFollowerCancelWithdrawsAll", testAppendManyCancel},
		{"ReadSeq", testReadSeq},
		{"UserConversations", testUserConversations},
		{"AddFriend", testAddFriend},
		{"AddFriendConcurrentBothDirections", testAddFriendConcurrent},
		{"EnsureSingle", testEnsureSingle},
		{"EnsureSingleConcurrent", testEnsureSingleConcurrent},
		{"CreateGroup", testCreateGroup},
		{"MembersAndWorld", testMembers},
		{"AddMembers", testAddMembers},
		{"AddMembersConcurrent", testAddMembersConcurrent},
		{"RemoveMemberPassesOwnership", testRemoveMember},
		{"RemovedMemberNotRevivedByAppend", testRemovedMemberNotRevived},
		{"Peers", testPeers},
		{"UserConversationsPeer", testUserConversationsPeer},
		{"OpenTwiceAndConcurrently", testOpenTwice},
		{"TwoStoresAppendConcurrently", testTwoStores},
		{"Close", testClose},
		{"SchemaMatchesModels", testSchemaMatchesModels},
	}
}

func TestStore(t *testing.T) {
	for _, d := range testDrivers() {
		t.Run(d.name, func(t *testing.T) {
			for _, c := range contractCases() {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, &harness{driver: d.name, dsn: d.dsn(t)})
				})
			}
		})
	}
}

// harness opens Stores on one test database. Every Store gets its own
// snowflake node, as separate processes would.
type harness struct {
	driver string
	dsn    string
	node   int64
}

func (h *harness) config(opts ...func(*Config)) Config {
	cfg := Config{Driver: h.driver, DSN: h.dsn, MaxOpenConns: 8}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

func (h *harness) open(t *testing.T, opts ...func(*Config)) *Store {
	t.Helper()
	return h.openWith(t, nil, opts...)
}

func (h *harness) openWith(t *testing.T, sopts []Option, opts ...func(*Config)) *Store {
	t.Helper()
	h.node++
	node, err := snowflake.NewNode(h.node)
	if err != nil {
		t.Fatalf("snowflake node: %v", err)
	}
	s, err := Open(t.Context(), h.config(opts...), node, nil, sopts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", h.driver, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func window(d time.Duration) func(*Config) { return func(c *Config) { c.BatchWindow = d } }
func maxBatch(n int) func(*Config)         { return func(c *Config) { c.MaxBatch = n } }

// addConversation inserts a bare conversation row directly, for tests of the
// append path that need no members.
func addConversation(t *testing.T, s *Store, id, typ string) {
	t.Helper()
	if err := s.wdb.Create(&conversationRow{ID: id, Type: typ, Name: id}).Error; err != nil {
		t.Fatalf("insert conversation %s: %v", id, err)
	}
}

func addMember(t *testing.T, s *Store, convID string, userID int64) {
	t.Helper()
	if err := s.wdb.Create(&memberRow{ConversationID: convID, UserID: userID, Role: "member"}).Error; err != nil {
		t.Fatalf("insert member %d of %s: %v", userID, convID, err)
	}
}

// enqueueSignal reports every Append that joined a batch. Set it before the
// Store is used concurrently.
func enqueueSignal(s *Store) <-chan struct{} {
	ch := make(chan struct{}, 1024)
	s.hooks.enqueued = func() { ch <- struct{}{} }
	return ch
}

type appendResult struct {
	msg Message
	dup bool
	err error
}

func goAppend(ctx context.Context, s *Store, m Message) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		msg, dup, err := s.Append(ctx, m)
		ch <- appendResult{msg, dup, err}
	}()
	return ch
}

// recv bounds every wait so that a bug fails the test instead of hanging it.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting")
		panic("unreachable")
	}
}

func mustAppend(t *testing.T, s *Store, m Message) Message {
	t.Helper()
	got, dup, err := s.Append(t.Context(), m)
	if err != nil {
		t.Fatalf("Append(%+v): %v", m, err)
	}
	if dup {
		t.Fatalf("Append(%+v): duplicate = true, want false", m)
	}
	return got
}

func mustMessages(t *testing.T, s *Store, convID string, from, to int64) []Message {
	t.Helper()
	ms, err := s.Messages(t.Context(), convID, from, to)
	if err != nil {
		t.Fatalf("Messages(%s, %d, %d): %v", convID, from, to, err)
	}
	return ms
}

func mustConversation(t *testing.T, s *Store, id string) Conversation {
	t.Helper()
	c, err := s.Conversation(t.Context(), id)
	if err != nil {
		t.Fatalf("Conversation(%s): %v", id, err)
	}
	return c
}

// wantSeqs fails unless msgs have exactly the seqs 1..n in order.
func wantSeqs(t *testing.T, msgs []Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("got %d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d, want %d (gap or duplicate)", i, m.Seq, i+1)
		}
	}
}

func testUsers(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()

	alice, err := s.CreateUser(ctx, "alice", "hash-a", false)
	if err != nil {
		t.Fatalf("CreateUser(alice): %v", err)
	}
	if alice.ID == 0 || alice.Username != "alice" || alice.PasswordHash != "hash-a" || alice.IsGuest || alice.CreatedAt.IsZero() {
		t.Errorf("CreateUser(alice) = %+v", alice)
	}
	if _, err := s.CreateUser(ctx, "alice", "other", true); !errors.Is(err, ErrUsernameTaken) {
		t.Errorf("CreateUser(alice) again: err = %v, want ErrUsernameTaken", err)
	}

	// Usernames are compared byte for byte: case, accents and trailing
	// spaces make different users (MySQL's default collations would not).
	distinct := []string{"Alice", "alicé", "alice ", "张三", "🐱cat"}
	created := map[string]User{"alice": alice}
	for _, name := range distinct {
		u, err := s.CreateUser(ctx, name, "h", true)
		if err != nil {
			t.Fatalf("CreateUser(%q): %v", name, err)
		}
		created[name] = u
	}
	for name, want := range created {
		got, err := s.UserByName(ctx, name)
		if err != nil {
			t.Fatalf("UserByName(%q): %v", name, err)
		}
		if got != want {
			t.Errorf("UserByName(%q) = %+v, want %+v", name, got, want)
		}
	}
	if _, err := s.UserByName(ctx, "ALICE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("UserByName(ALICE): err = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateUser(ctx, strings.Repeat("x", 65), "h", false); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateUser(65 chars): err = %v, want ErrInvalid", err)
	}

	ids := []int64{created["张三"].ID, 42, alice.ID, created["张三"].ID}
	users, err := s.UsersByID(ctx, ids)
	if err != nil {
		t.Fatalf("UsersByID: %v", err)
	}
	if len(users) != 2 || users[0] != created["张三"] || users[1] != alice {
		t.Errorf("UsersByID(%v) = %+v, want [张三 alice]", ids, users)
	}
	if users, err := s.UsersByID(ctx, nil); err != nil || len(users) != 0 {
		t.Errorf("UsersByID(nil) = %v, %v; want empty", users, err)
	}
}

func testAppendGapFree(t *testing.T, h *harness) {
	s := h.open(t)
	addConversation(t, s, "group_1", "group")

	var last Message
	for i := range 20 {
		m := mustAppend(t, s, Message{ConversationID: "group_1", SenderID: 7, SenderName: "bob", Type: 1, Content: fmt.Sprintf("m%d", i)})
		if m.Seq != int64(i+1) || m.ID == 0 || m.CreatedAt.IsZero() || m.SenderName != "bob" || m.Type != 1 {
			t.Fatalf("append %d = %+v, want seq %d with id and time", i, m, i+1)
		}
		last = m
	}
	c := mustConversation(t, s, "group_1")
	if c.LastSeq != 20 || c.LastMessageID != last.ID || c.LastMessagePreview != "m19" || !c.LastMessageAt.Equal(last.CreatedAt) {
		t.Errorf("conversation after 20 appends = %+v, want last seq 20 and last message %+v", c, last)
	}

	got := mustMessages(t, s, "group_1", 5, 10)
	if len(got) != 6 || got[0].Seq != 5 || got[5].Seq != 10 || got[0].Content != "m4" {
		t.Errorf("Messages(5, 10) = %+v, want seqs 5..10", got)
	}
	wantSeqs(t, mustMessages(t, s, "group_1", 1, 1<<62), 20)
	if got := mustMessages(t, s, "group_1", 10, 9); len(got) != 0 {
		t.Errorf("Messages(10, 9) = %v, want none", got)
	}
	if got := mustMessages(t, s, "nope", 1, 100); len(got) != 0 {
		t.Errorf("Messages(missing conversation) = %v, want none", got)
	}

	// The preview is cut on a character boundary, and MySQL's VARCHAR(255)
	// would reject anything longer.
	long := strings.Repeat("消息", 200)
	mustAppend(t, s, Message{ConversationID: "group_1", SenderID: 7, Content: long})
	c = mustConversation(t, s, "group_1")
	if n := utf8.RuneCountInString(c.LastMessagePreview); n != maxPreviewLen || !strings.HasPrefix(long, c.LastMessagePreview) {
		t.Errorf("preview has %d characters (prefix of content: %v), want %d", n, strings.HasPrefix(long, c.LastMessagePreview), maxPreviewLen)
	}
}

func testAppendValidates(t *testing.T, h *harness) {
	s := h.open(t)
	addConversation(t, s, "c", "group")
	tests := []struct {
		name string
		msg  Message
	}{
		{"no conversation", Message{SenderID: 1, Content: "x"}},
		{"client id too long", Message{ConversationID: "c", SenderID: 1, ClientMsgID: strings.Repeat("i", 65)}},
		{"content not UTF-8", Message{ConversationID: "c", SenderID: 1, Content: "\xff\xfe"}},
		{"content too large", Message{ConversationID: "c", SenderID: 1, Content: strings.Repeat("x", maxContentSize+1)}},
	}
	for _, tt := range tests {
		if _, _, err := s.Append(t.Context(), tt.msg); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.name, err)
		}
	}
	if c := mustConversation(t, s, "c"); c.LastSeq != 0 {
		t.Errorf("last seq = %d after rejected appends, want 0", c.LastSeq)
	}
}

func testDedupeSequential(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	addConversation(t, s, "c", "group")

	first := mustAppend(t, s, Message{ConversationID: "c", SenderID: 1, ClientMsgID: "k1", Content: "hello"})
	again, dup, err := s.Append(ctx, Message{ConversationID: "c", SenderID: 1, ClientMsgID: "k1", Content: "retry"})
	if err != nil || !dup || again != first {
		t.Fatalf("repeat = %+v, dup %v, err %v; want the stored %+v as duplicate", again, dup, err, first)
	}
	// The key is (sender, client id), compared byte for byte; messages
	// without a client id are never de-duplicated.
	for _, m := range []Message{
		{ConversationID: "c", SenderID: 2, ClientMsgID: "k1", Content: "other sender"},
		{ConversationID: "c", SenderID: 1, ClientMsgID: "K1", Content: "other case"},
		{ConversationID: "c", SenderID: 1, ClientMsgID: "k1 ", Content: "trailing space"},
		{ConversationID: "c", SenderID: 1, Content: "no id"},
		{ConversationID: "c", SenderID: 1, Content: "no id"},
	} {
		mustAppend(t, s, m)
	}
	msgs := mustMessages(t, s, "c", 1, 100)
	wantSeqs(t, msgs, 6)
	if msgs[0].ClientMsgID != "k1" || msgs[4].ClientMsgID != "" {
		t.Errorf("client ids = %q, %q; want k1 and empty", msgs[0].ClientMsgID, msgs[4].ClientMsgID)
	}
}

// testBatchRoundTrips appends one batch of messages whose values are awkward for
// the statement encodings (SQLite passes a batch as JSON): ids near 2^63,
// numeric-looking and empty client ids, quotes, backslashes, markup, NUL and
// characters beyond the BMP; every value must read back exactly, in the
// messages, the conversation's preview and the sender's read pointer.
func testBatchRoundTrips(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(5))
	addConversation(t, s, "c", "group")
	const big = int64(1)<<62 + 12345
	addMember(t, s, "c", big)
	in := []Message{
		{ConversationID: "c", SenderID: big, SenderName: `Zoë "quoted" \back`, ClientMsgID: "007", Type: 3, Content: "<b>&amp;</b> 'single' \"double\" \\ \n"},
		{ConversationID: "c", SenderID: big, ClientMsgID: "1e3", Content: "nul\x00inside"},
		{ConversationID: "c", SenderID: 7, Content: "emoji 🎉 and 中文"},
		{ConversationID: WorldID, SenderID: big, ClientMsgID: "null", Content: "world"},
		{ConversationID: "c", SenderID: big, ClientMsgID: "true", Content: strings.Repeat("é", maxPreviewLen+10)},
	}
	got := make([]Message, len(in))
	var wg sync.WaitGroup
	for i, m := range in {
		wg.Go(func() { got[i] = mustAppend(t, s, m) })
	}
	wg.Wait()

	stored := mustMessages(t, s, "c", 1, 100)
	wantSeqs(t, stored, 4)
	world := mustMessages(t, s, WorldID, 1, 100)
	for i, m := range in {
		var back Message
		for _, r := range append(stored, world...) {
			if r.ID == got[i].ID {
				back = r
			}
		}
		if back.ID == 0 {
			t.Fatalf("message %d (id %d) not read back", i, got[i].ID)
		}
		if back != got[i] {
			t.Errorf("message %d read back as %+v, Append returned %+v", i, back, got[i])
		}
		if back.SenderID != m.SenderID || back.SenderName != m.SenderName || back.ClientMsgID != m.ClientMsgID ||
			back.Type != m.Type || back.Content != m.Content {
			t.Errorf("message %d stored as %+v, sent %+v", i, back, m)
		}
	}
	// The dedupe lookup must find every stored client id again (through a second
	// Store: s would hold a lone resend for its hour-long window).
	s2 := h.open(t)
	for _, m := range in {
		if m.ClientMsgID == "" {
			continue
		}
		if _, dup, err := s2.Append(t.Context(), m); err != nil || !dup {
			t.Errorf("resending client id %q: dup %v, err %v; want the stored duplicate", m.ClientMsgID, dup, err)
		}
	}
	conv := mustConversation(t, s, "c")
	last := stored[len(stored)-1]
	if conv.LastSeq != 4 || conv.LastMessageID != last.ID || conv.LastMessagePreview != truncateRunes(last.Content, maxPreviewLen) {
		t.Errorf("conversation = seq %d, last id %d, preview %q; want 4, %d, the last content cut to %d characters",
			conv.LastSeq, conv.LastMessageID, conv.LastMessagePreview, last.ID, maxPreviewLen)
	}
	var wantRead int64 // the sender's last seq in c
	for _, m := range stored {
		if m.SenderID == big {
			wantRead = m.Seq
		}
	}
	for _, c := range []struct {
		conv string
		want int64
	}{{"c", wantRead}, {WorldID, 1}} {
		var row memberRow
		err := s.rdb.Where("conversation_id = ? AND user_id = ?", c.conv, big).Take(&row).Error
		if err != nil || row.LastReadSeq != c.want {
			t.Errorf("sender's read pointer in %s = %d (err %v); want %d", c.conv, row.LastReadSeq, err, c.want)
		}
	}
}

func testDedupeConcurrent(t *testing.T, h *harness) {
	s := h.open(t)
	addConversation(t, s, "c", "group")

	const n = 50
	results := make([]appendResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m, dup, err := s.Append(t.Context(), Message{ConversationID: "c", SenderID: 9, ClientMsgID: "same", Content: fmt.Sprint(i)})
			results[i] = appendResult{m, dup, err}
		})
	}
	wg.Wait()

	originals := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("append %d: %v", i, r.err)
		}
		if !r.dup {
			originals++
		}
		if r.msg.ID != results[0].msg.ID || r.msg.Seq != 1 {
			t.Errorf("append %d = id %d seq %d, want id %d seq 1", i, r.msg.ID, r.msg.Seq, results[0].msg.ID)
		}
	}
	if originals != 1 {
		t.Errorf("%d appends reported duplicate = false, want exactly 1", originals)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 1)
	if c := mustConversation(t, s, "c"); c.LastSeq != 1 {
		t.Errorf("last seq = %d, want 1: duplicates must not consume seqs", c.LastSeq)
	}
}

func testConcurrentAppends(t *testing.T, h *harness) {
	s := h.open(t)
	convs := []string{"group_a", "group_b"}
	for _, c := range convs {
		addConversation(t, s, c, "group")
	}

	const workers, each = 20, 50
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			lastSeq := map[string]int64{}
			for i := range each {
				conv := convs[(w+i)%2]
				m, _, err := s.Append(t.Context(), Message{ConversationID: conv, SenderID: int64(w + 1), ClientMsgID: fmt.Sprintf("%d-%d", w, i), Content: "x"})
				if err != nil {
					errs <- fmt.Errorf("worker %d append %d: %w", w, i, err)
					return
				}
				// One caller's appends are ordered: each waits for the last.
				if m.Seq <= lastSeq[conv] {
					errs <- fmt.Errorf("worker %d got seq %d after %d in %s", w, m.Seq, lastSeq[conv], conv)
					return
				}
				lastSeq[conv] = m.Seq
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	ids := map[int64]bool{}
	for _, c := range convs {
		msgs := mustMessages(t, s, c, 1, 1<<62)
		wantSeqs(t, msgs, workers*each/2)
		for _, m := range msgs {
			if ids[m.ID] {
				t.Fatalf("message id %d stored twice", m.ID)
			}
			ids[m.ID] = true
		}
		if got := mustConversation(t, s, c).LastSeq; got != workers*each/2 {
			t.Errorf("%s last seq = %d, want %d", c, got, workers*each/2)
		}
	}
	st := s.Stats()
	t.Logf("%d messages in %d transactions, largest %d", st.Messages, st.Batches, st.LargestBatch)
	if st.Messages != workers*each {
		t.Errorf("stats count %d messages, want %d", st.Messages, workers*each)
	}

	// Pages hold at most 500 messages.
	for i := range 10 {
		mustAppend(t, s, Message{ConversationID: "group_a", SenderID: 1, Content: fmt.Sprint(i)})
	}
	if got := mustMessages(t, s, "group_a", 1, 1<<62); len(got) != maxMessages || got[maxMessages-1].Seq != maxMessages {
		t.Errorf("Messages(1, max) returned %d, want the first %d", len(got), maxMessages)
	}
	if got := mustMessages(t, s, "group_a", 501, 1<<62); len(got) != 10 || got[0].Seq != 501 {
		t.Errorf("Messages(501, max) returned %d, want 10 from seq 501", len(got))
	}
}

// testFullBatch proves group commit deterministically: with a window far
// longer than the test, the only way for ten appends to finish is the batch
// filling up, and then they share one transaction.
func testFullBatch(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(10))
	addConversation(t, s, "c", "group")
	for i := range 10 {
		addMember(t, s, "c", int64(i+1))
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			if _, _, err := s.Append(ctx, Message{ConversationID: "c", SenderID: int64(i + 1), Content: "x"}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	if st := s.Stats(); st.Batches != 1 || st.Messages != 10 || st.LargestBatch != 10 {
		t.Errorf("stats = %+v, want one transaction of 10 messages", st)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 10)
	for i := range 10 {
		if got, err := s.ReadSeq(t.Context(), "c", int64(i+1)); err != nil || got == 0 {
			t.Errorf("ReadSeq(sender %d) = %d, %v; want their own seq", i+1, got, err)
		}
	}
}

func testMissingConversation(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(3))
	addConversation(t, s, "c", "group")
	enq := enqueueSignal(s)

	// One batch: two good appends around one to a conversation that does not exist.
	a := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, Content: "a"})
	recv(t, enq)
	bad := goAppend(t.Context(), s, Message{ConversationID: "nope", SenderID: 1, ClientMsgID: "x", Content: "?"})
	recv(t, enq)
	b := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, Content: "b"})

	if r := recv(t, bad); !errors.Is(r.err, ErrNotFound) {
		t.Errorf("append to missing conversation: err = %v, want ErrNotFound", r.err)
	}
	ra, rb := recv(t, a), recv(t, b)
	if ra.err != nil || rb.err != nil || ra.msg.Seq != 1 || rb.msg.Seq != 2 {
		t.Errorf("good appends = (%d, %v), (%d, %v); want seqs 1, 2", ra.msg.Seq, ra.err, rb.msg.Seq, rb.err)
	}
	if st := s.Stats(); st.Batches != 1 || st.Fallbacks != 0 {
		t.Errorf("stats = %+v, want one batch and no fallback: a missing conversation is not a batch failure", st)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 2)
}

// testFailedBatchFallsBack breaks one message's transaction after its INSERT,
// when its seq has been allocated, and checks that the rollback returned the
// seq and that the other messages of its batch were still stored.
// testConstraintViolation makes the batch's INSERT itself fail: a stray row holds
// the seq the conversation hands out next. The whole transaction must roll back
// (no seq burned, no read pointer moved), the writer connection must stay usable,
// and once the stray row is gone the same messages commit with gap-free seqs.
func testConstraintViolation(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(2))
	addConversation(t, s, "c", "group")
	addMember(t, s, "c", 1)
	stray := messageRow{ID: 1, ConversationID: "c", Seq: 1, SenderID: 99, Content: "stray"}
	if err := s.wdb.Create(&stray).Error; err != nil {
		t.Fatalf("insert stray row: %v", err)
	}
	in := []Message{
		{ConversationID: "c", SenderID: 1, ClientMsgID: "x", Content: "x"},
		{ConversationID: "c", SenderID: 1, ClientMsgID: "y", Content: "y"},
	}
	errs := make([]error, len(in))
	var wg sync.WaitGroup
	for i, m := range in {
		wg.Go(func() { _, _, errs[i] = s.Append(t.Context(), m) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Fatalf("append %d succeeded over a row holding its seq", i)
		}
	}
	if st := s.Stats(); st.Fallbacks != 1 {
		t.Errorf("fallbacks = %d, want 1 (the batch, then each message alone)", st.Fallbacks)
	}
	if c := mustConversation(t, s, "c"); c.LastSeq != 0 {
		t.Errorf("last_seq = %d after failed appends, want 0 (rolled back)", c.LastSeq)
	}
	if got, _ := s.ReadSeq(t.Context(), "c", 1); got != 0 {
		t.Errorf("sender's read seq = %d, want 0 (rolled back)", got)
	}

	if err := s.wdb.Delete(&stray).Error; err != nil {
		t.Fatalf("delete stray row: %v", err)
	}
	for i, m := range in {
		wg.Go(func() { _, _, errs[i] = s.Append(t.Context(), m) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("appends after the repair: %v", err)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 2)
	if got, _ := s.ReadSeq(t.Context(), "c", 1); got != 2 {
		t.Errorf("sender's read seq = %d, want 2", got)
	}
}

// openObserved opens a store that records every transaction of its append path
// (WithCommitObserver); commits returns those recorded so far.
func openObserved(t *testing.T, h *harness, opts ...func(*Config)) (s *Store, commits func() []Commit) {
	t.Helper()
	var mu sync.Mutex
	var got []Commit
	s = h.openWith(t, []Option{WithCommitObserver(func(c Commit) {
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
	})}, opts...)
	return s, func() []Commit {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// testCommitObserver follows one batch that fails and its one-by-one retries
// through WithCommitObserver: every transaction is reported once, with its size
// and outcome.
func testCommitObserver(t *testing.T, h *harness) {
	s, commits := openObserved(t, h, window(time.Hour), maxBatch(3))
	addConversation(t, s, "c", "group")
	errPoison := poison(s)
	enq := enqueueSignal(s)
	a := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, Content: "a"})
	recv(t, enq)
	p := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 2, Content: "poison"})
	recv(t, enq)
	b := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 3, Content: "b"})
	recv(t, a)
	recv(t, p)
	recv(t, b)

	got := commits()
	if len(got) != 4 {
		t.Fatalf("observed %d commits, want 4 (the batch, then a, poison, b alone): %+v", len(got), got)
	}
	want := []struct {
		appends, inserted int
		failed, alone     bool
	}{{3, 0, true, false}, {1, 1, false, true}, {1, 0, true, true}, {1, 1, false, true}}
	for i, w := range want {
		c := got[i]
		if c.Appends != w.appends || c.Inserted != w.inserted || (c.Err != nil) != w.failed || c.Alone != w.alone || c.Duration <= 0 {
			t.Errorf("commit %d = %+v; want %d appends, %d inserted, failed %v, alone %v, a duration", i, c, w.appends, w.inserted, w.failed, w.alone)
		}
		if w.failed && !errors.Is(c.Err, errPoison) {
			t.Errorf("commit %d error = %v, want %v", i, c.Err, errPoison)
		}
	}
}

// testUncheckedResend: batches are written without looking their client message ids
// up. One that holds a stored id fails on the unique index and is written again
// with the lookup: the resend gets the stored message, the batch's new messages
// keep gap-free seqs. Batches go on looking for recheckHold after that.
func testUncheckedResend(t *testing.T, h *harness) {
	s, commits := openObserved(t, h, window(time.Hour), maxBatch(3))
	var ticks atomic.Int64 // the store's clock, moved by the test only
	base := time.Now()
	s.now = func() time.Time { return base.Add(time.Duration(ticks.Load())) }
	addConversation(t, s, "c", "group")
	batch := func(ids ...string) []Appended { // fills a batch: it commits at once
		ms := make([]Message, len(ids))
		for i, id := range ids {
			ms[i] = Message{ConversationID: "c", SenderID: 1, ClientMsgID: id, Content: "m" + id}
		}
		res := s.AppendMany(t.Context(), ms)
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("append %s: %v", ids[i], r.Err)
			}
		}
		return res
	}
	first := batch("a", "b", "c")
	resend := batch("d", "b", "e")
	batch("f", "g", "h")
	ticks.Add(int64(recheckHold - time.Millisecond))
	batch("i", "j", "k")
	ticks.Add(int64(time.Millisecond))
	batch("l", "m", "n")

	if r := resend[1]; !r.Duplicate || r.Msg != first[1].Msg {
		t.Errorf("resent b = %+v; want the stored %+v as a duplicate", r, first[1].Msg)
	}
	if resend[0].Msg.Seq != 4 || resend[2].Msg.Seq != 5 || resend[0].Duplicate || resend[2].Duplicate {
		t.Errorf("d, e = seq %d dup %v, seq %d dup %v; want new at 4 and 5",
			resend[0].Msg.Seq, resend[0].Duplicate, resend[2].Msg.Seq, resend[2].Duplicate)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 14)

	got := commits()
	want := []struct {
		inserted         int
		checked, recheck bool
	}{
		{3, false, false}, // a b c
		{0, false, true},  // d b e, unchecked: b is stored
		{2, true, false},  // d b e again, checked
		{3, true, false},  // f g h: b was found just now
		{3, true, false},  // i j k: b was found recheckHold − 1 ms ago
		{3, false, false}, // l m n: recheckHold has passed
	}
	if len(got) != len(want) {
		t.Fatalf("observed %d commits, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		c := got[i]
		if c.Appends != 3 || c.Inserted != w.inserted || c.Checked != w.checked || c.Recheck != w.recheck ||
			(c.Err != nil) != w.recheck || (w.recheck && !isUniqueViolation(c.Err)) {
			t.Errorf("commit %d = %+v; want 3 appends, %d inserted, checked %v, recheck %v (failed on the unique index)",
				i, c, w.inserted, w.checked, w.recheck)
		}
	}
}

// poison makes every batch holding a message with content "poison" fail inside its
// transaction, after the INSERT, with the returned error.
func poison(s *Store) error {
	errPoison := errors.New("poisoned")
	s.hooks.beforeCommit = func(ms []Message) error {
		for _, m := range ms {
			if m.Content == "poison" {
				return errPoison
			}
		}
		return nil
	}
	return errPoison
}

func testFailedBatchFallback(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(3))
	addConversation(t, s, "c", "group")
	for _, u := range []int64{1, 2, 3} {
		addMember(t, s, "c", u)
	}
	errPoison := poison(s)
	enq := enqueueSignal(s)

	a := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, ClientMsgID: "a", Content: "a"})
	recv(t, enq)
	p := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 2, ClientMsgID: "p", Content: "poison"})
	recv(t, enq)
	b := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 3, ClientMsgID: "b", Content: "b"})

	if r := recv(t, p); !errors.Is(r.err, errPoison) {
		t.Errorf("poisoned append: err = %v, want %v", r.err, errPoison)
	}
	ra, rb := recv(t, a), recv(t, b)
	if ra.err != nil || rb.err != nil || ra.msg.Seq != 1 || rb.msg.Seq != 2 {
		t.Errorf("other appends = (%d, %v), (%d, %v); want seqs 1, 2", ra.msg.Seq, ra.err, rb.msg.Seq, rb.err)
	}
	if st := s.Stats(); st.Fallbacks != 1 {
		t.Errorf("fallbacks = %d, want 1", st.Fallbacks)
	}
	if got, _ := s.ReadSeq(t.Context(), "c", 2); got != 0 {
		t.Errorf("poisoned sender's read seq = %d, want 0 (rolled back)", got)
	}

	// A lone failing append is not retried item by item either; its seq is
	// not burned, and its client id was not stored. Every goroutine that
	// used the Store has finished, so the window can be shortened in place.
	s.hooks.enqueued = nil
	s.cfg.BatchWindow = time.Millisecond
	if _, _, err := s.Append(t.Context(), Message{ConversationID: "c", SenderID: 2, ClientMsgID: "p", Content: "poison"}); !errors.Is(err, errPoison) {
		t.Errorf("lone poisoned append: err = %v, want %v", err, errPoison)
	}
	if m := mustAppend(t, s, Message{ConversationID: "c", SenderID: 2, ClientMsgID: "p", Content: "cured"}); m.Seq != 3 {
		t.Errorf("append after failures got seq %d, want 3", m.Seq)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 3)
}

func testPanicInBatch(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(2))
	addConversation(t, s, "c", "group")
	s.hooks.beforeCommit = func([]Message) error { panic("boom") }
	enq := enqueueSignal(s)

	leaderPanic := make(chan any, 1)
	go func() {
		defer func() { leaderPanic <- recover() }()
		_, _, _ = s.Append(t.Context(), Message{ConversationID: "c", SenderID: 1, Content: "leader"})
	}()
	recv(t, enq)
	follower := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 2, Content: "follower"})

	if r := recv(t, follower); r.err == nil || !strings.Contains(r.err.Error(), "panicked") {
		t.Errorf("follower of a panicking batch: err = %v, want a panic error", r.err)
	}
	if p := recv(t, leaderPanic); p != "boom" {
		t.Errorf("leader recovered %v, want the panic to propagate", p)
	}
	// The transaction was rolled back and the Store still works.
	s.hooks.beforeCommit = nil
	s.hooks.enqueued = nil
	s.cfg.BatchWindow = time.Millisecond
	if m := mustAppend(t, s, Message{ConversationID: "c", SenderID: 1, Content: "after"}); m.Seq != 1 {
		t.Errorf("append after the panic got seq %d, want 1", m.Seq)
	}
}

func testFollowerCancel(t *testing.T, h *harness) {
	s, enq, leader := withLeader(t, h, 3)
	fctx, cancel := context.WithCancel(t.Context())
	follower := goAppend(fctx, s, Message{ConversationID: "c", SenderID: 2, Content: "follower"})
	recv(t, enq)
	cancel()
	// Queued, not yet written: the follower returns at once, without waiting
	// for the hour-long window, and its message is never written.
	if r := recv(t, follower); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled follower: err = %v, want context.Canceled", r.err)
	}
	// The withdrawn item still counts towards MaxBatch; this one fills it.
	fillAfterWithdrawal(t, s, leader)
}

// withLeader opens a Store whose batches hold n messages and never time out, and
// starts the Append that leads the first batch of conversation c.
func withLeader(t *testing.T, h *harness, n int) (*Store, <-chan struct{}, <-chan appendResult) {
	t.Helper()
	s := h.open(t, window(time.Hour), maxBatch(n))
	addConversation(t, s, "c", "group")
	enq := enqueueSignal(s)
	leader := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, Content: "leader"})
	recv(t, enq)
	return s, enq, leader
}

// fillAfterWithdrawal appends the message that fills the batch whose followers
// withdrew, and checks that only the leader's message and this one were stored.
func fillAfterWithdrawal(t *testing.T, s *Store, leader <-chan appendResult) {
	t.Helper()
	last := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 3, Content: "last"})
	rl, rlast := recv(t, leader), recv(t, last)
	if rl.err != nil || rlast.err != nil {
		t.Fatalf("leader: %v, last: %v", rl.err, rlast.err)
	}
	msgs := mustMessages(t, s, "c", 1, 100)
	wantSeqs(t, msgs, 2)
	if msgs[0].Content != "leader" || msgs[1].Content != "last" {
		t.Errorf("stored %q, %q; want leader, last", msgs[0].Content, msgs[1].Content)
	}
}

func testLeaderCancel(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour), maxBatch(10))
	addConversation(t, s, "c", "group")
	enq := enqueueSignal(s)

	lctx, cancel := context.WithCancel(t.Context())
	leader := goAppend(lctx, s, Message{ConversationID: "c", SenderID: 1, Content: "leader"})
	recv(t, enq)
	follower := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 2, Content: "follower"})
	recv(t, enq)
	cancel()

	if r := recv(t, leader); !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled leader: err = %v, want context.Canceled", r.err)
	}
	if r := recv(t, follower); r.err != nil || r.msg.Seq != 1 {
		t.Errorf("follower of a cancelled leader = seq %d, err %v; want seq 1", r.msg.Seq, r.err)
	}
	msgs := mustMessages(t, s, "c", 1, 100)
	wantSeqs(t, msgs, 1)
	if msgs[0].Content != "follower" {
		t.Errorf("stored %q, want only the follower's message", msgs[0].Content)
	}
}

// testAppendMany appends, in one call, more messages than a batch holds: each gets
// the outcome its own Append would have had, seqs follow the order given, and the
// call leads one batch after another.
func testAppendMany(t *testing.T, h *harness) {
	s := h.open(t, window(20*time.Millisecond), maxBatch(4))
	addConversation(t, s, "c", "group")
	addConversation(t, s, "d", "group")
	addMember(t, s, "c", 1)
	msg := func(conv, content, clientID string) Message {
		return Message{ConversationID: conv, SenderID: 1, Content: content, ClientMsgID: clientID}
	}
	in := []Message{
		msg("c", "a", "x1"), msg("d", "b", ""), msg("c", "c", ""), msg("nope", "?", ""), // batch 1 (full)
		msg("c", "\xff\xfe", ""),                                                           // invalid (not UTF-8): never queued
		msg("c", "a again", "x1"), msg("c", "e", ""), msg("d", "f", ""), msg("c", "g", ""), // batch 2 (full)
		msg("c", "h", ""), // batch 3, after the window
	}
	res := s.AppendMany(t.Context(), in)
	if len(res) != len(in) {
		t.Fatalf("AppendMany returned %d results for %d messages", len(res), len(in))
	}
	wantSeq := map[int]int64{0: 1, 1: 1, 2: 2, 6: 3, 7: 2, 8: 4, 9: 5}
	for i, r := range res {
		switch {
		case i == 3:
			if !errors.Is(r.Err, ErrNotFound) {
				t.Errorf("message %d to a missing conversation: err = %v, want ErrNotFound", i, r.Err)
			}
		case i == 4:
			if !errors.Is(r.Err, ErrInvalid) {
				t.Errorf("invalid message %d: err = %v, want ErrInvalid", i, r.Err)
			}
		case i == 5:
			if r.Err != nil || !r.Duplicate || r.Msg.ID != res[0].Msg.ID {
				t.Errorf("resent message %d = %+v; want a duplicate of message 0 (id %d)", i, r, res[0].Msg.ID)
			}
		default:
			if r.Err != nil || r.Duplicate || r.Msg.Seq != wantSeq[i] || r.Msg.Content != in[i].Content {
				t.Errorf("message %d = seq %d %q dup %v err %v; want seq %d %q", i, r.Msg.Seq, r.Msg.Content, r.Duplicate, r.Err, wantSeq[i], in[i].Content)
			}
		}
	}
	if st := s.Stats(); st.Batches != 3 || st.Messages != 7 || st.LargestBatch != 3 {
		t.Errorf("stats = %+v; want 3 transactions storing 7 messages, at most 3 at once", st)
	}
	wantSeqs(t, mustMessages(t, s, "c", 1, 100), 5)
	wantSeqs(t, mustMessages(t, s, "d", 1, 100), 2)
	if got, err := s.ReadSeq(t.Context(), "c", 1); err != nil || got != 5 {
		t.Errorf("sender's read pointer in c = %d, %v; want 5", got, err)
	}
}

// testAppendManyCancel: an AppendMany that follows someone else's batch and whose
// ctx ends before the batch is sealed withdraws every one of its messages; none
// is written, and the others' are.
func testAppendManyCancel(t *testing.T, h *harness) {
	s, enq, leader := withLeader(t, h, 5)
	fctx, cancel := context.WithCancel(t.Context())
	many := make(chan []Appended, 1)
	go func() {
		many <- s.AppendMany(fctx, []Message{
			{ConversationID: "c", SenderID: 2, Content: "m1"},
			{ConversationID: "c", SenderID: 2, Content: "m2"},
			{ConversationID: "c", SenderID: 2, Content: "m3"},
		})
	}()
	recv(t, enq)
	cancel()
	for i, r := range recv(t, many) {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("withdrawn message %d: err = %v, want context.Canceled", i, r.Err)
		}
	}
	// The withdrawn items still count towards MaxBatch (1 + 3): this one fills it.
	fillAfterWithdrawal(t, s, leader)
}

func testReadSeq(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	addConversation(t, s, "c", "group")
	const sender, reader, stranger = 1, 2, 3
	addMember(t, s, "c", sender)
	addMember(t, s, "c", reader)
	for range 5 {
		mustAppend(t, s, Message{ConversationID: "c", SenderID: sender, Content: "x"})
	}
	if got, err := s.ReadSeq(ctx, "c", sender); err != nil || got != 5 {
		t.Errorf("sender's ReadSeq = %d, %v; want 5 (own messages are read)", got, err)
	}
	if got, err := s.ReadSeq(ctx, "c", reader); err != nil || got != 0 {
		t.Errorf("ReadSeq of a member who never read = %d, %v; want 0", got, err)
	}
	if got, err := s.ReadSeq(ctx, "c", stranger); err != nil || got != 0 {
		t.Errorf("ReadSeq without member row = %d, %v; want 0", got, err)
	}
	// Outside world the member row is the membership: SetReadSeq does not
	// create one.
	if _, err := s.SetReadSeq(ctx, "c", stranger, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetReadSeq(non-member): err = %v, want ErrNotFound", err)
	}
	if _, ok, err := s.Member(ctx, "c", stranger); err != nil || ok {
		t.Errorf("Member(non-member) after SetReadSeq = %v, %v; want not found", ok, err)
	}
	// In world it does: membership there is implicit.
	mustAppend(t, s, Message{ConversationID: WorldID, SenderID: sender, Content: "w"})
	if got, err := s.SetReadSeq(ctx, WorldID, reader, 0); err != nil || got != 1 {
		t.Errorf("SetReadSeq(world, new row) = %d, %v; want 1", got, err)
	}

	steps := []struct {
		set, want int64
	}{
		{3, 3},
		{2, 3},   // never backwards
		{100, 5}, // clamped to last_seq
		{4, 5},
		{0, 5}, // 0 means "everything"
	}
	for _, st := range steps {
		got, err := s.SetReadSeq(ctx, "c", reader, st.set)
		if err != nil || got != st.want {
			t.Fatalf("SetReadSeq(%d) = %d, %v; want %d", st.set, got, err, st.want)
		}
		if got, err := s.ReadSeq(ctx, "c", reader); err != nil || got != st.want {
			t.Fatalf("ReadSeq after SetReadSeq(%d) = %d, %v; want %d", st.set, got, err, st.want)
		}
	}
	mustAppend(t, s, Message{ConversationID: "c", SenderID: sender, Content: "x"})
	mustAppend(t, s, Message{ConversationID: "c", SenderID: sender, Content: "x"})
	if got, err := s.SetReadSeq(ctx, "c", reader, -1); err != nil || got != 7 {
		t.Errorf("SetReadSeq(-1) = %d, %v; want 7", got, err)
	}
	// The sender's pointer followed their own messages and does not go back.
	if got, err := s.SetReadSeq(ctx, "c", sender, 1); err != nil || got != 7 {
		t.Errorf("sender SetReadSeq(1) = %d, %v; want 7", got, err)
	}
	if _, err := s.SetReadSeq(ctx, "nope", reader, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetReadSeq(missing conversation): err = %v, want ErrNotFound", err)
	}
}

func testUserConversations(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	const user = 100

	got, err := s.UserConversations(ctx, user)
	if err != nil {
		t.Fatalf("UserConversations: %v", err)
	}
	if len(got) != 1 || got[0].Conversation.ID != WorldID || got[0].Conversation.Type != TypeWorld || got[0].Conversation.Name != "World" || got[0].ReadSeq != 0 {
		t.Fatalf("UserConversations of a new user = %+v, want only world", got)
	}

	addConversation(t, s, "group_g", "group")
	addConversation(t, s, "group_other", "group")
	addMember(t, s, "group_g", user)
	mustAppend(t, s, Message{ConversationID: "group_g", SenderID: 5, Content: "hi"})
	mustAppend(t, s, Message{ConversationID: "group_g", SenderID: 5, Content: "hi"})
	mustAppend(t, s, Message{ConversationID: WorldID, SenderID: user, Content: "hello world"})
	if _, err := s.SetReadSeq(ctx, "group_g", user, 1); err != nil {
		t.Fatalf("SetReadSeq: %v", err)
	}

	got, err = s.UserConversations(ctx, user)
	if err != nil {
		t.Fatalf("UserConversations: %v", err)
	}
	byID := map[string]UserConversation{}
	for _, uc := range got {
		byID[uc.Conversation.ID] = uc
	}
	if len(got) != 2 || len(byID) != 2 {
		t.Fatalf("UserConversations = %+v, want world and group_g once each", got)
	}
	if w := byID[WorldID]; w.ReadSeq != 1 || w.Conversation.LastSeq != 1 {
		t.Errorf("world = %+v, want read seq 1 of 1 (the user's own message)", w)
	}
	if g := byID["group_g"]; g.ReadSeq != 1 || g.Conversation.LastSeq != 2 || g.Conversation.LastMessagePreview != "hi" {
		t.Errorf("group_g = %+v, want read seq 1 of 2", g)
	}
}

func testOpenTwice(t *testing.T, h *harness) {
	first := h.open(t)
	u, err := first.CreateUser(t.Context(), "carol", "h", false)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}

	// Several processes starting at once all migrate the same database.
	const n = 4
	stores := make([]*Store, n)
	var wg sync.WaitGroup
	for i := range n {
		node, _ := snowflake.NewNode(int64(100 + i))
		wg.Go(func() {
			s, err := Open(t.Context(), h.config(), node, nil)
			if err != nil {
				t.Errorf("concurrent Open %d: %v", i, err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s == nil {
			t.FailNow()
		}
		t.Cleanup(func() { _ = s.Close() })
		if got, err := s.UserByName(t.Context(), "carol"); err != nil || got != u {
			t.Errorf("UserByName through another Store = %+v, %v; want %+v", got, err, u)
		}
	}
	var worlds int64
	if err := first.rdb.Model(&conversationRow{}).Where("id = ?", WorldID).Count(&worlds).Error; err != nil || worlds != 1 {
		t.Errorf("world rows = %d, %v; want 1", worlds, err)
	}
}

// testTwoStores is two repo processes appending to one conversation: the
// conversation row's lock (MySQL) or the file lock (SQLite) must keep the
// seqs gap-free across Stores that know nothing of each other.
func testTwoStores(t *testing.T, h *harness) {
	a, b := h.open(t), h.open(t)
	addConversation(t, a, "world_2", "group")

	const perStore, workers, each = 2, 10, 25
	errs := make(chan error, perStore*workers)
	var wg sync.WaitGroup
	for si, s := range []*Store{a, b} {
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					_, _, err := s.Append(t.Context(), Message{ConversationID: "world_2", SenderID: int64(si*100 + w), ClientMsgID: fmt.Sprint(i), Content: "x"})
					if err != nil {
						errs <- fmt.Errorf("store %d worker %d: %w", si, w, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs := mustMessages(t, a, "world_2", 1, 1<<62)
	wantSeqs(t, msgs, perStore*workers*each)
	ids := map[int64]bool{}
	for _, m := range msgs {
		if ids[m.ID] {
			t.Fatalf("id %d stored twice", m.ID)
		}
		ids[m.ID] = true
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("store a: %d messages in %d transactions; store b: %d in %d", sa.Messages, sa.Batches, sb.Messages, sb.Batches)
	if sa.Messages == 0 || sb.Messages == 0 {
		t.Errorf("one store wrote nothing: %+v, %+v", sa, sb)
	}
}

func testClose(t *testing.T, h *harness) {
	s := h.open(t, window(time.Hour))
	addConversation(t, s, "c", "group")
	enq := enqueueSignal(s)

	// Close cuts the hour-long window short and waits for the append.
	pending := goAppend(t.Context(), s, Message{ConversationID: "c", SenderID: 1, Content: "in flight"})
	recv(t, enq)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Had Close not waited, the append would have met a closed database.
	if r := recv(t, pending); r.err != nil || r.msg.Seq != 1 {
		t.Errorf("append in flight during Close = seq %d, %v; want seq 1", r.msg.Seq, r.err)
	}

	if _, _, err := s.Append(t.Context(), Message{ConversationID: "c", SenderID: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: err = %v, want ErrClosed", err)
	}
	if _, err := s.UserByName(t.Context(), "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("UserByName after Close: err = %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: err = %v, want ErrClosed", err)
	}

	reopened := h.open(t)
	wantSeqs(t, mustMessages(t, reopened, "c", 1, 100), 1)
}

// testSchemaMatchesModels catches drift between the hand-written DDL and the
// gorm models used to query it.
func testSchemaMatchesModels(t *testing.T, h *harness) {
	s := h.open(t)
	for _, model := range []any{&userRow{}, &friendshipRow{}, &conversationRow{}, &memberRow{}, &messageRow{}} {
		cols, err := s.wdb.Migrator().ColumnTypes(model)
		if err != nil {
			t.Fatalf("ColumnTypes(%T): %v", model, err)
		}
		have := map[string]bool{}
		for _, c := range cols {
			have[c.Name()] = true
		}
		stmt := s.wdb.Model(model).Statement
		if err := stmt.Parse(model); err != nil {
			t.Fatalf("parse %T: %v", model, err)
		}
		var want []string
		for _, f := range stmt.Schema.Fields {
			want = append(want, f.DBName)
			if !have[f.DBName] {
				t.Errorf("table %s has no column %s for %T", stmt.Schema.Table, f.DBName, model)
			}
		}
		if len(have) != len(want) {
			t.Errorf("table %s has columns %v, model %T maps %v", stmt.Schema.Table, slices.Sorted(maps.Keys(have)), model, want)
		}
	}
}
