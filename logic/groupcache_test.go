package logic_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client/callopt"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic"
	"github.com/gochat/gochat/logic/pushq"
)

// memberProbe counts the member lookups logic asks repo for, by conversation.
type memberProbe struct {
	logic.Repo
	mu         sync.Mutex
	get, lists map[string]int
}

func (p *memberProbe) GetMember(ctx context.Context, r *repoapi.GetMemberReq, opts ...callopt.Option) (*repoapi.GetMemberResp, error) {
	p.mu.Lock()
	p.get[r.ConversationId]++
	p.mu.Unlock()
	return p.Repo.GetMember(ctx, r, opts...)
}

func (p *memberProbe) ListMembers(ctx context.Context, r *repoapi.ListMembersReq, opts ...callopt.Option) (*repoapi.ListMembersResp, error) {
	p.mu.Lock()
	p.lists[r.ConversationId]++
	p.mu.Unlock()
	return p.Repo.ListMembers(ctx, r, opts...)
}

func (p *memberProbe) lookups(conv string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.get[conv] + p.lists[conv]
}

// TestGroupSendsReuseMembersUntilTheyChange: a group's sends check their sender and
// fan out from the member list the fan-out read, without asking repo again, and a
// membership change made through logic takes effect at the next send: a member
// added receives it and may send, a member removed may not send and no longer
// receives. The cache's ttl is a minute here, so nothing expires during the test.
func TestGroupSendsReuseMembersUntilTheyChange(t *testing.T) {
	probe := &memberProbe{get: map[string]int{}, lists: map[string]int{}}
	e := newEnvConfig(t, func(r logic.Repo) logic.Repo { probe.Repo = r; return probe },
		func(c *logic.Config) { c.MemberCacheTTL = time.Minute })
	ctx := context.Background()
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	carol, _ := e.register(t, "carol")
	g, err := e.l.CreateGroup(ctx, &logicapi.CreateGroupReq{UserId: alice.Id, Name: "team", MemberIds: []int64{bob.Id}})
	if err != nil {
		t.Fatal(err)
	}
	conv := g.Conversation.Id
	groupID, err := strconv.ParseInt(strings.TrimPrefix(conv, "group_"), 10, 64)
	if err != nil {
		t.Fatalf("group conversation id %q: %v", conv, err)
	}
	// bob has sockets on gw-b and gw-c, carol on gw-c: a push to gw-c names
	// every member it is for.
	gwB := e.gatewayPushes(t, "gw-b", 100, messagesOnly)
	gwC := e.gatewayPushes(t, "gw-c", 100, messagesOnly)
	for _, c := range []struct {
		user int64
		gw   string
	}{{bob.Id, "gw-b"}, {bob.Id, "gw-c"}, {carol.Id, "gw-c"}} {
		if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: c.user, GatewayId: c.gw}); err != nil {
			t.Fatal(err)
		}
	}
	send := func(from int64, text string) error {
		_, err := e.l.Send(ctx, &logicapi.SendReq{UserId: from, ConversationId: conv, Content: text, Type: 1, ClientMsgId: text})
		return err
	}
	recv := func(ch <-chan pushq.Push, text string, to ...int64) {
		t.Helper()
		select {
		case p := <-ch:
			if p.Message.Content != text || !slices.Equal(p.Recipients, to) {
				t.Fatalf("push %q to %v; want %q to %v", p.Message.Content, p.Recipients, text, to)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no push of %q", text)
		}
	}

	if err := send(alice.Id, "m1"); err != nil {
		t.Fatal(err)
	}
	recv(gwB, "m1", bob.Id)
	recv(gwC, "m1", bob.Id)
	read := probe.lookups(conv)
	if err := send(alice.Id, "m2"); err != nil {
		t.Fatal(err)
	}
	recv(gwB, "m2", bob.Id)
	recv(gwC, "m2", bob.Id)
	batch, err := e.l.SendBatch(ctx, &logicapi.SendBatchReq{Items: []*logicapi.SendReq{{UserId: bob.Id, ConversationId: conv, Content: "m3", Type: 1, ClientMsgId: "m3"}}})
	if err != nil || batch.Results[0].ErrorCode != base.ErrCode_OK {
		t.Fatalf("bob's batch send: %+v, %v", batch, err)
	}
	recv(gwB, "m3", bob.Id)
	recv(gwC, "m3", bob.Id)
	if n := probe.lookups(conv); n != read {
		t.Errorf("member lookups went from %d to %d over two more sends; want none", read, n)
	}

	if _, err := e.l.AddGroupMembers(ctx, &logicapi.AddGroupMembersReq{UserId: alice.Id, GroupId: groupID, MemberIds: []int64{carol.Id}}); err != nil {
		t.Fatal(err)
	}
	if err := send(alice.Id, "m4"); err != nil {
		t.Fatal(err)
	}
	recv(gwB, "m4", bob.Id)
	recv(gwC, "m4", bob.Id, carol.Id)
	if err := send(carol.Id, "m5"); err != nil {
		t.Fatalf("carol's send right after she was added: %v", err)
	}
	recv(gwB, "m5", bob.Id)
	recv(gwC, "m5", bob.Id, carol.Id)

	if _, err := e.l.RemoveGroupMember(ctx, &logicapi.RemoveGroupMemberReq{UserId: alice.Id, GroupId: groupID, TargetUserId: bob.Id}); err != nil {
		t.Fatal(err)
	}
	if err := send(bob.Id, "m6"); codeOf(err) != base.ErrCode_NOT_MEMBER {
		t.Fatalf("bob's send right after his removal: %v; want NOT_MEMBER", err)
	}
	if err := send(alice.Id, "m7"); err != nil {
		t.Fatal(err)
	}
	recv(gwC, "m7", carol.Id) // and not bob, whose other socket is on gw-c too
}
