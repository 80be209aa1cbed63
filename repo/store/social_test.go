package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Contract cases for friends, single conversations, groups and members; they
// run in TestStore on both drivers.

func mustUser(t *testing.T, s *Store, name string) User {
	t.Helper()
	u, err := s.CreateUser(t.Context(), name, "h", false)
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", name, err)
	}
	return u
}

func mustGroup(t *testing.T, s *Store, owner int64, members ...int64) Conversation {
	t.Helper()
	c, err := s.CreateGroup(t.Context(), "team", owner, members)
	if err != nil {
		t.Fatalf("CreateGroup(owner %d, %v): %v", owner, members, err)
	}
	return c
}

func mustMembers(t *testing.T, s *Store, convID string) []Member {
	t.Helper()
	ms, err := s.Members(t.Context(), convID, 0, maxMembersPage)
	if err != nil {
		t.Fatalf("Members(%s): %v", convID, err)
	}
	return ms
}

// memberRoles maps user id to role.
func memberRoles(ms []Member) map[int64]string {
	out := make(map[int64]string, len(ms))
	for _, m := range ms {
		out[m.UserID] = m.Role
	}
	return out
}

func userIDs(us []User) []int64 {
	out := make([]int64, len(us))
	for i, u := range us {
		out[i] = u.ID
	}
	return out
}

// rowCount counts rows of model matching where, bypassing the API.
func rowCount(t *testing.T, s *Store, model any, where string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.rdb.Model(model).Where(where, args...).Count(&n).Error; err != nil {
		t.Fatalf("count %T where %s: %v", model, where, err)
	}
	return n
}

// wantSingle checks the invariants of the single conversation of a and b.
func wantSingle(t *testing.T, s *Store, c Conversation, id string, a, b int64) {
	t.Helper()
	if c.ID != id || c.Type != TypeSingle || c.MemberCount != 2 || c.OwnerID != 0 {
		t.Errorf("single conversation = %+v, want %s of type single with 2 members", c, id)
	}
	roles := memberRoles(mustMembers(t, s, id))
	if len(roles) != 2 || roles[a] != RoleMember || roles[b] != RoleMember {
		t.Errorf("members of %s = %v, want %d and %d as members", id, roles, a, b)
	}
}

func testAddFriend(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	alice, bob, carol, zed := mustUser(t, s, "alice"), mustUser(t, s, "bob"), mustUser(t, s, "carol"), mustUser(t, s, "Zed")

	c, err := s.AddFriend(ctx, alice.ID, bob.ID, "single_ab")
	if err != nil {
		t.Fatalf("AddFriend(alice, bob): %v", err)
	}
	wantSingle(t, s, c, "single_ab", alice.ID, bob.ID)
	for _, tt := range []struct {
		user int64
		want []int64
	}{{alice.ID, []int64{bob.ID}}, {bob.ID, []int64{alice.ID}}, {carol.ID, nil}} {
		fs, err := s.Friends(ctx, tt.user)
		if err != nil || !slices.Equal(userIDs(fs), tt.want) {
			t.Errorf("Friends(%d) = %v, %v; want %v", tt.user, userIDs(fs), err, tt.want)
		}
	}

	// The single conversation may exist already, with history and read
	// pointers: befriending keeps them.
	if _, _, err := s.EnsureSingle(ctx, "single_ac", carol.ID, alice.ID); err != nil {
		t.Fatalf("EnsureSingle: %v", err)
	}
	mustAppend(t, s, Message{ConversationID: "single_ac", SenderID: carol.ID, Content: "hi"})
	c, err = s.AddFriend(ctx, alice.ID, carol.ID, "single_ac")
	if err != nil {
		t.Fatalf("AddFriend(alice, carol) over an existing conversation: %v", err)
	}
	wantSingle(t, s, c, "single_ac", alice.ID, carol.ID)
	if c.LastSeq != 1 {
		t.Errorf("last seq after befriending = %d, want the existing 1", c.LastSeq)
	}
	if got, _ := s.ReadSeq(ctx, "single_ac", carol.ID); got != 1 {
		t.Errorf("carol's read seq = %d, want 1 (kept)", got)
	}

	if _, err := s.AddFriend(ctx, alice.ID, zed.ID, "single_az"); err != nil {
		t.Fatalf("AddFriend(alice, Zed): %v", err)
	}
	// Byte order: upper case sorts first, on MySQL as on SQLite.
	fs, err := s.Friends(ctx, alice.ID)
	if want := []int64{zed.ID, bob.ID, carol.ID}; err != nil || !slices.Equal(userIDs(fs), want) {
		t.Errorf("Friends(alice) = %v, %v; want Zed, bob, carol %v", userIDs(fs), err, want)
	}

	errCases := []struct {
		name         string
		user, friend int64
		conv         string
		want         error
	}{
		{"again", alice.ID, bob.ID, "single_ab", ErrAlreadyFriends},
		{"again reversed", bob.ID, alice.ID, "single_ab", ErrAlreadyFriends},
		{"self", alice.ID, alice.ID, "single_aa", ErrInvalid},
		{"unknown friend", alice.ID, 42, "single_a42", ErrNotFound},
		{"unknown user", 42, alice.ID, "single_42a", ErrNotFound},
		{"empty conversation id", bob.ID, carol.ID, "", ErrInvalid},
		{"not a single id", bob.ID, carol.ID, "group_1", ErrInvalid},
		{"another pair's conversation", bob.ID, carol.ID, "single_ab", ErrInvalid},
	}
	for _, tt := range errCases {
		if _, err := s.AddFriend(ctx, tt.user, tt.friend, tt.conv); !errors.Is(err, tt.want) {
			t.Errorf("AddFriend %s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Failed calls left nothing behind: no friendship, no conversation.
	if n := rowCount(t, s, &friendshipRow{}, "user_id = ? OR friend_id = ?", 42, 42); n != 0 {
		t.Errorf("%d friendship rows of an unknown user", n)
	}
	if fs, _ := s.Friends(ctx, bob.ID); !slices.Equal(userIDs(fs), []int64{alice.ID}) {
		t.Errorf("Friends(bob) = %v after a rejected AddFriend, want only alice", userIDs(fs))
	}
	if _, err := s.Conversation(ctx, "single_a42"); !errors.Is(err, ErrNotFound) {
		t.Errorf("conversation of a failed AddFriend: err = %v, want ErrNotFound", err)
	}
}

func testAddFriendConcurrent(t *testing.T, h *harness) {
	s := h.open(t)
	const pairs = 8
	for p := range pairs {
		a, b := mustUser(t, s, fmt.Sprintf("a%d", p)), mustUser(t, s, fmt.Sprintf("b%d", p))
		conv := fmt.Sprintf("single_%d", p)
		var start sync.WaitGroup
		start.Add(1)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, pair := range [][2]int64{{a.ID, b.ID}, {b.ID, a.ID}} {
			wg.Go(func() {
				start.Wait()
				_, errs[i] = s.AddFriend(t.Context(), pair[0], pair[1], conv)
			})
		}
		start.Done()
		wg.Wait()
		ok, already := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrAlreadyFriends):
				already++
			default:
				t.Fatalf("pair %d: AddFriend: %v", p, err)
			}
		}
		if ok != 1 || already != 1 {
			t.Fatalf("pair %d: %d succeeded and %d got ErrAlreadyFriends (%v), want 1 and 1", p, ok, already, errs)
		}
		if n := rowCount(t, s, &friendshipRow{}, "user_id IN ?", []int64{a.ID, b.ID}); n != 2 {
			t.Errorf("pair %d: %d friendship rows, want 2", p, n)
		}
		wantSingle(t, s, mustConversation(t, s, conv), conv, a.ID, b.ID)
	}
}

func testEnsureSingle(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	a, b := mustUser(t, s, "a"), mustUser(t, s, "b")

	c, created, err := s.EnsureSingle(ctx, "single_ab", a.ID, b.ID)
	if err != nil || !created {
		t.Fatalf("EnsureSingle first = created %v, %v; want created", created, err)
	}
	wantSingle(t, s, c, "single_ab", a.ID, b.ID)
	mustAppend(t, s, Message{ConversationID: "single_ab", SenderID: a.ID, Content: "x"})
	again, created, err := s.EnsureSingle(ctx, "single_ab", b.ID, a.ID)
	if err != nil || created || again.ID != c.ID || again.LastSeq != 1 {
		t.Errorf("EnsureSingle again = %+v, created %v, %v; want the existing row with last seq 1", again, created, err)
	}
	if got, _ := s.ReadSeq(ctx, "single_ab", a.ID); got != 1 {
		t.Errorf("read seq after EnsureSingle again = %d, want 1 (kept)", got)
	}
	// A 1:1 chat is not a friendship.
	if fs, err := s.Friends(ctx, a.ID); err != nil || len(fs) != 0 {
		t.Errorf("Friends after EnsureSingle = %v, %v; want none", fs, err)
	}

	addConversation(t, s, "single_looks_like_a_group", TypeGroup)
	errCases := []struct {
		name string
		conv string
		x, y int64
		want error
	}{
		{"unknown user", "single_a42", a.ID, 42, ErrNotFound},
		{"self", "single_aa", a.ID, a.ID, ErrInvalid},
		{"not a single id", "group_ab", a.ID, b.ID, ErrInvalid},
		{"id too long", "single_" + strings.Repeat("x", maxIDLen), a.ID, b.ID, ErrInvalid},
		{"wrong type", "single_looks_like_a_group", a.ID, b.ID, ErrInvalid},
	}
	for _, tt := range errCases {
		if _, _, err := s.EnsureSingle(ctx, tt.conv, tt.x, tt.y); !errors.Is(err, tt.want) {
			t.Errorf("EnsureSingle %s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := rowCount(t, s, &memberRow{}, "conversation_id = ?", "single_looks_like_a_group"); n != 0 {
		t.Errorf("rejected EnsureSingle left %d member rows", n)
	}
}

func testEnsureSingleConcurrent(t *testing.T, h *harness) {
	s := h.open(t)
	a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
	const n = 10
	type result struct {
		conv    Conversation
		created bool
		err     error
	}
	results := make([]result, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		x, y := a.ID, b.ID
		if i%2 == 1 {
			x, y = y, x
		}
		wg.Go(func() {
			start.Wait()
			c, created, err := s.EnsureSingle(t.Context(), "single_ab", x, y)
			results[i] = result{c, created, err}
		})
	}
	start.Done()
	wg.Wait()
	created := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("EnsureSingle %d: %v", i, r.err)
		}
		if r.created {
			created++
		}
		if r.conv.ID != "single_ab" || r.conv.MemberCount != 2 {
			t.Errorf("EnsureSingle %d returned %+v", i, r.conv)
		}
	}
	if created != 1 {
		t.Errorf("%d calls reported created, want exactly 1", created)
	}
	if got := rowCount(t, s, &memberRow{}, "conversation_id = ?", "single_ab"); got != 2 {
		t.Errorf("%d member rows, want 2", got)
	}
}

func testCreateGroup(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	owner, x, y := mustUser(t, s, "owner"), mustUser(t, s, "x"), mustUser(t, s, "y")

	c, err := s.CreateGroup(ctx, "Team 团队", owner.ID, []int64{x.ID, y.ID, x.ID, owner.ID, 424242})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if !strings.HasPrefix(c.ID, "group_") || c.Type != TypeGroup || c.Name != "Team 团队" || c.OwnerID != owner.ID || c.MemberCount != 3 {
		t.Errorf("CreateGroup = %+v, want group_… named Team 团队 owned by %d with 3 members", c, owner.ID)
	}
	if got := mustConversation(t, s, c.ID); got != c {
		t.Errorf("stored group = %+v, want %+v", got, c)
	}
	roles := memberRoles(mustMembers(t, s, c.ID))
	if want := map[int64]string{owner.ID: RoleOwner, x.ID: RoleMember, y.ID: RoleMember}; !mapsEqual(roles, want) {
		t.Errorf("members = %v, want %v", roles, want)
	}

	alone, err := s.CreateGroup(ctx, "solo", owner.ID, nil)
	if err != nil || alone.MemberCount != 1 || alone.ID == c.ID {
		t.Errorf("CreateGroup without members = %+v, %v; want a new group of 1", alone, err)
	}

	errCases := []struct {
		name  string
		group string
		owner int64
		want  error
	}{
		{"unknown owner", "g", 424242, ErrNotFound},
		{"empty name", "", owner.ID, ErrInvalid},
		{"blank name", "   ", owner.ID, ErrInvalid},
		{"name too long", strings.Repeat("n", maxGroupNameLen+1), owner.ID, ErrInvalid},
		{"name not UTF-8", "\xff", owner.ID, ErrInvalid},
	}
	for _, tt := range errCases {
		if _, err := s.CreateGroup(ctx, tt.group, tt.owner, []int64{x.ID}); !errors.Is(err, tt.want) {
			t.Errorf("CreateGroup %s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := rowCount(t, s, &conversationRow{}, "type = ?", TypeGroup); n != 2 {
		t.Errorf("%d groups stored, want 2 (failed creates leave nothing)", n)
	}
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testMembers(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	users := make([]User, 5)
	for i := range users {
		users[i] = mustUser(t, s, fmt.Sprintf("u%d", i))
	}
	ids := userIDs(users)
	slices.Sort(ids)

	// World: every user is a member, joined at sign-up until a row holds a
	// read pointer.
	m, ok, err := s.Member(ctx, WorldID, users[0].ID)
	if err != nil || !ok || m.UserID != users[0].ID || m.Role != RoleMember || m.ReadSeq != 0 || !m.JoinedAt.Equal(users[0].CreatedAt) {
		t.Errorf("Member(world, new user) = %+v, %v, %v; want a member since sign-up", m, ok, err)
	}
	mustAppend(t, s, Message{ConversationID: WorldID, SenderID: users[0].ID, Content: "hello"})
	if m, ok, err := s.Member(ctx, WorldID, users[0].ID); err != nil || !ok || m.ReadSeq != 1 {
		t.Errorf("Member(world) after posting = %+v, %v, %v; want read seq 1", m, ok, err)
	}
	if _, ok, err := s.Member(ctx, WorldID, 424242); err != nil || ok {
		t.Errorf("Member(world, unknown user) = %v, %v; want not found", ok, err)
	}
	var got []int64
	for after := int64(0); ; {
		page, err := s.Members(ctx, WorldID, after, 2)
		if err != nil {
			t.Fatalf("Members(world, %d, 2): %v", after, err)
		}
		if len(page) > 2 {
			t.Fatalf("page of %d, limit 2", len(page))
		}
		for _, m := range page {
			got = append(got, m.UserID)
			if m.Role != RoleMember {
				t.Errorf("world member %+v, want role member", m)
			}
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].UserID
	}
	if !slices.Equal(got, ids) {
		t.Errorf("world members paged = %v, want every user %v", got, ids)
	}

	// A group: explicit rows, paged by user id.
	g := mustGroup(t, s, users[4].ID, ids...)
	mustAppend(t, s, Message{ConversationID: g.ID, SenderID: users[4].ID, Content: "x"})
	mustAppend(t, s, Message{ConversationID: g.ID, SenderID: users[4].ID, Content: "y"})
	if _, err := s.SetReadSeq(ctx, g.ID, users[1].ID, 1); err != nil {
		t.Fatalf("SetReadSeq: %v", err)
	}
	all, err := s.Members(ctx, g.ID, 0, 5000) // capped, not refused
	if err != nil || len(all) != 5 {
		t.Fatalf("Members(group, limit 5000) = %d, %v; want 5", len(all), err)
	}
	page, err := s.Members(ctx, g.ID, ids[1], 2)
	if err != nil || len(page) != 2 || page[0].UserID != ids[2] || page[1].UserID != ids[3] {
		t.Errorf("Members(group, after %d, 2) = %+v, %v; want %v", ids[1], page, err, ids[2:4])
	}
	if m, ok, err := s.Member(ctx, g.ID, users[1].ID); err != nil || !ok || m.ReadSeq != 1 || m.Role != RoleMember || m.JoinedAt.IsZero() {
		t.Errorf("Member(group, reader) = %+v, %v, %v; want member with read seq 1", m, ok, err)
	}
	if m, ok, err := s.Member(ctx, g.ID, users[4].ID); err != nil || !ok || m.ReadSeq != 2 || m.Role != RoleOwner {
		t.Errorf("Member(group, owner) = %+v, %v, %v; want owner with read seq 2", m, ok, err)
	}

	if _, ok, err := s.Member(ctx, "group_nope", users[0].ID); err != nil || ok {
		t.Errorf("Member(missing conversation) = %v, %v; want not found", ok, err)
	}
	if ms, err := s.Members(ctx, "group_nope", 0, 10); err != nil || len(ms) != 0 {
		t.Errorf("Members(missing conversation) = %v, %v; want none", ms, err)
	}
	if _, err := s.Members(ctx, g.ID, 0, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Members(limit 0): err = %v, want ErrInvalid", err)
	}
}

func testAddMembers(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	owner, x, y, z := mustUser(t, s, "owner"), mustUser(t, s, "x"), mustUser(t, s, "y"), mustUser(t, s, "z")
	g := mustGroup(t, s, owner.ID)

	steps := []struct {
		in        []int64
		wantAdded []int64
		wantCount int32
	}{
		{[]int64{y.ID, x.ID, y.ID, owner.ID, 424242}, []int64{y.ID, x.ID}, 3},
		{[]int64{x.ID, z.ID}, []int64{z.ID}, 4},
		{nil, nil, 4},
		{[]int64{424242}, nil, 4},
	}
	for _, st := range steps {
		added, c, err := s.AddMembers(ctx, g.ID, st.in)
		if err != nil || !slices.Equal(added, st.wantAdded) || c.MemberCount != st.wantCount || c.ID != g.ID {
			t.Fatalf("AddMembers(%v) = %v, %+v, %v; want %v added and %d members", st.in, added, c, err, st.wantAdded, st.wantCount)
		}
	}
	if roles := memberRoles(mustMembers(t, s, g.ID)); len(roles) != 4 || roles[owner.ID] != RoleOwner || roles[z.ID] != RoleMember {
		t.Errorf("members = %v", roles)
	}

	if _, _, err := s.EnsureSingle(ctx, "single_xy", x.ID, y.ID); err != nil {
		t.Fatalf("EnsureSingle: %v", err)
	}
	for _, tt := range []struct {
		conv string
		want error
	}{{"single_xy", ErrInvalid}, {WorldID, ErrInvalid}, {"group_nope", ErrNotFound}} {
		if _, _, err := s.AddMembers(ctx, tt.conv, []int64{z.ID}); !errors.Is(err, tt.want) {
			t.Errorf("AddMembers(%s): err = %v, want %v", tt.conv, err, tt.want)
		}
	}
	if n := rowCount(t, s, &memberRow{}, "conversation_id = ?", "single_xy"); n != 2 {
		t.Errorf("single conversation has %d member rows after a refused AddMembers, want 2", n)
	}
}

// testAddMembersConcurrent: overlapping concurrent adds add each user once
// and keep member_count exact.
func testAddMembersConcurrent(t *testing.T, h *harness) {
	s := h.open(t)
	owner := mustUser(t, s, "owner")
	g := mustGroup(t, s, owner.ID)
	const users, workers = 20, 8
	ids := make([]int64, users)
	for i := range ids {
		ids[i] = mustUser(t, s, fmt.Sprintf("u%d", i)).ID
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			// Each worker adds a different rotation of every id.
			in := append(slices.Clone(ids[w:]), ids[:w]...)
			added, _, err := s.AddMembers(t.Context(), g.ID, in)
			if err != nil {
				errs <- err
				return
			}
			total.Add(int64(len(added)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AddMembers: %v", err)
	}
	if total.Load() != users {
		t.Errorf("added %d in total, want each of %d users once", total.Load(), users)
	}
	if c := mustConversation(t, s, g.ID); c.MemberCount != users+1 {
		t.Errorf("member count = %d, want %d", c.MemberCount, users+1)
	}
	if n := rowCount(t, s, &memberRow{}, "conversation_id = ?", g.ID); n != users+1 {
		t.Errorf("%d member rows, want %d", n, users+1)
	}
}

func testRemoveMember(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	// A clock that ticks on every read, so joins have distinct times.
	var tick atomic.Int64
	base := time.Now()
	s.now = func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) }

	early := mustUser(t, s, "early") // lowest id, but joins the group last
	owner := mustUser(t, s, "owner")
	b, c := mustUser(t, s, "b"), mustUser(t, s, "c")
	g := mustGroup(t, s, owner.ID, c.ID, b.ID) // b and c join at the same moment
	if _, _, err := s.AddMembers(ctx, g.ID, []int64{early.ID}); err != nil {
		t.Fatalf("AddMembers: %v", err)
	}
	first := min(b.ID, c.ID) // the tie between b and c goes to the lower id
	second := max(b.ID, c.ID)

	steps := []struct {
		name        string
		remove      int64
		wantRemoved bool
		wantOwner   int64
		wantCount   int32
	}{
		{"owner leaves", owner.ID, true, first, 3},
		{"again", owner.ID, false, first, 3},
		{"plain member", second, true, first, 2},
		{"new owner leaves", first, true, early.ID, 1},
		{"last member", early.ID, true, 0, 0},
	}
	for _, st := range steps {
		removed, conv, err := s.RemoveMember(ctx, g.ID, st.remove)
		if err != nil || removed != st.wantRemoved || conv.OwnerID != st.wantOwner || conv.MemberCount != st.wantCount {
			t.Fatalf("%s: RemoveMember = %v, %+v, %v; want removed %v, owner %d, %d members",
				st.name, removed, conv, err, st.wantRemoved, st.wantOwner, st.wantCount)
		}
		if st.wantOwner != 0 {
			if m, ok, err := s.Member(ctx, g.ID, st.wantOwner); err != nil || !ok || m.Role != RoleOwner {
				t.Errorf("%s: new owner's membership = %+v, %v, %v; want role owner", st.name, m, ok, err)
			}
		}
		if _, ok, _ := s.Member(ctx, g.ID, st.remove); ok {
			t.Errorf("%s: %d is still a member", st.name, st.remove)
		}
	}

	if _, _, err := s.EnsureSingle(ctx, "single_bc", b.ID, c.ID); err != nil {
		t.Fatalf("EnsureSingle: %v", err)
	}
	for _, tt := range []struct {
		conv string
		want error
	}{{"single_bc", ErrInvalid}, {WorldID, ErrInvalid}, {"group_nope", ErrNotFound}} {
		if _, _, err := s.RemoveMember(ctx, tt.conv, b.ID); !errors.Is(err, tt.want) {
			t.Errorf("RemoveMember(%s): err = %v, want %v", tt.conv, err, tt.want)
		}
	}
}

// testRemovedMemberNotRevived: an append or read that raced with a removal
// (the caller checked membership just before) must not recreate the member.
func testRemovedMemberNotRevived(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	owner, gone := mustUser(t, s, "owner"), mustUser(t, s, "gone")
	g := mustGroup(t, s, owner.ID, gone.ID)
	if _, _, err := s.RemoveMember(ctx, g.ID, gone.ID); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	mustAppend(t, s, Message{ConversationID: g.ID, SenderID: gone.ID, Content: "late"})
	mustAppend(t, s, Message{ConversationID: g.ID, SenderID: owner.ID, Content: "hi"})
	if _, err := s.SetReadSeq(ctx, g.ID, gone.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetReadSeq(removed member): err = %v, want ErrNotFound", err)
	}
	if _, ok, err := s.Member(ctx, g.ID, gone.ID); err != nil || ok {
		t.Errorf("Member(removed) = %v, %v; want not found", ok, err)
	}
	if c := mustConversation(t, s, g.ID); c.MemberCount != 1 || c.LastSeq != 2 {
		t.Errorf("group = %+v, want 1 member and last seq 2", c)
	}
	if got, _ := s.ReadSeq(ctx, g.ID, owner.ID); got != 2 {
		t.Errorf("owner's read seq = %d, want 2 (own message)", got)
	}
}

func testPeers(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	a, b, c, d, e := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c"), mustUser(t, s, "d"), mustUser(t, s, "e")
	if _, err := s.AddFriend(ctx, a.ID, b.ID, "single_ab"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.EnsureSingle(ctx, "single_ac", c.ID, a.ID); err != nil { // a chat, not a friendship
		t.Fatal(err)
	}
	if _, err := s.AddFriend(ctx, e.ID, a.ID, "single_ae"); err != nil { // friend and chat: once
		t.Fatal(err)
	}
	mustGroup(t, s, a.ID, d.ID) // group members are not peers
	sorted := func(ids ...int64) []int64 { slices.Sort(ids); return ids }
	for _, tt := range []struct {
		user int64
		want []int64
	}{
		{a.ID, sorted(b.ID, c.ID, e.ID)},
		{b.ID, []int64{a.ID}},
		{c.ID, []int64{a.ID}},
		{d.ID, nil},
	} {
		got, err := s.Peers(ctx, tt.user)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Peers(%d) = %v, %v; want %v", tt.user, got, err, tt.want)
		}
	}
	// PeersMany answers the same in one query; users without peers are absent.
	many, err := s.PeersMany(ctx, []int64{a.ID, b.ID, c.ID, d.ID, a.ID, 999})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64][]int64{a.ID: sorted(b.ID, c.ID, e.ID), b.ID: {a.ID}, c.ID: {a.ID}}
	if len(many) != len(want) {
		t.Errorf("PeersMany = %v, want %v", many, want)
	}
	for u, w := range want {
		if !slices.Equal(many[u], w) {
			t.Errorf("PeersMany[%d] = %v, want %v", u, many[u], w)
		}
	}
	if empty, err := s.PeersMany(ctx, nil); err != nil || len(empty) != 0 {
		t.Errorf("PeersMany(nil) = %v, %v", empty, err)
	}
}

func testUserConversationsPeer(t *testing.T, h *harness) {
	s := h.open(t)
	ctx := t.Context()
	a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
	if _, err := s.AddFriend(ctx, a.ID, b.ID, "single_ab"); err != nil {
		t.Fatal(err)
	}
	g := mustGroup(t, s, a.ID, c.ID)
	for _, tt := range []struct {
		user int64
		want map[string]int64 // conversation → peer id
	}{
		{a.ID, map[string]int64{WorldID: 0, "single_ab": b.ID, g.ID: 0}},
		{b.ID, map[string]int64{WorldID: 0, "single_ab": a.ID}},
		{c.ID, map[string]int64{WorldID: 0, g.ID: 0}},
	} {
		ucs, err := s.UserConversations(ctx, tt.user)
		if err != nil {
			t.Fatalf("UserConversations(%d): %v", tt.user, err)
		}
		got := map[string]int64{}
		for _, uc := range ucs {
			got[uc.Conversation.ID] = uc.PeerID
		}
		if len(ucs) != len(tt.want) || !mapsEqual(got, tt.want) {
			t.Errorf("UserConversations(%d) peers = %v (%d rows), want %v", tt.user, got, len(ucs), tt.want)
		}
	}
}
