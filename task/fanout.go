package task

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/pushq"
)

// Repo is what the fan-out needs from repo; the generated reposervice.Client satisfies it.
type Repo interface {
	ListMembers(ctx context.Context, req *repoapi.ListMembersReq, opts ...callopt.Option) (*repoapi.ListMembersResp, error)
	GetRoutes(ctx context.Context, req *repoapi.GetRoutesReq, opts ...callopt.Option) (*repoapi.GetRoutesResp, error)
	GetJobCursor(ctx context.Context, req *repoapi.GetJobCursorReq, opts ...callopt.Option) (*repoapi.GetJobCursorResp, error)
	SaveJobCursor(ctx context.Context, req *repoapi.SaveJobCursorReq, opts ...callopt.Option) (*repoapi.SaveJobCursorResp, error)
}

// GatewaySet reports live gateways.
type GatewaySet interface {
	Alive(id string) bool
}

type fanMetrics struct {
	jobs, batches, records, skipped prometheus.Counter
}

func newFanMetrics(reg prometheus.Registerer) (*fanMetrics, error) {
	m := &fanMetrics{
		jobs:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gochat_task_fanout_jobs_total", Help: "Large-group fan-out jobs completed."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "gochat_task_fanout_batches_total", Help: "Member pages pushed by fan-out jobs."}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "gochat_task_fanout_records_total", Help: "Per-gateway push records published by fan-out jobs."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "gochat_task_fanout_skipped_total", Help: "Jobs skipped: malformed, or already done (redelivery)."}),
	}
	for _, c := range []prometheus.Collector{m.jobs, m.batches, m.records, m.skipped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("task: register metrics: %w", err)
		}
	}
	return m, nil
}

// handleJob pushes one message to every member of a large conversation, a page of
// FanoutBatch members at a time: routes for the page in one call, one push record per
// live gateway holding any of them. Progress (the last member id pushed) is saved after
// each page, so a job redelivered after a crash or rebalance resumes at the next page:
// at most the page in flight is pushed twice, and a finished job is not redone.
// An error makes the consumer retry the job in place (offset not marked).
func (t *Task) handleJob(ctx context.Context, _, value []byte) error {
	job, err := pushq.DecodeFanoutJob(value)
	if err != nil {
		// Retrying cannot fix it; count it and move on.
		t.fan.skipped.Inc()
		t.log.Error("malformed fan-out job skipped", "err", err)
		return nil
	}
	id := "fanout:" + strconv.FormatInt(job.Message.ID, 10)
	cur, err := t.repo.GetJobCursor(ctx, &repoapi.GetJobCursorReq{JobId: id})
	if err != nil {
		return fmt.Errorf("load progress of %s: %w", id, err)
	}
	if cur.Done {
		t.fan.skipped.Inc()
		return nil
	}
	after := cur.Cursor
	batch := int32(t.cfg.FanoutBatch)
	for {
		page, err := t.repo.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: job.Message.ConversationID, AfterUserId: after, Limit: batch})
		if err != nil {
			return fmt.Errorf("list members of %s after %d: %w", job.Message.ConversationID, after, err)
		}
		if len(page.Members) == 0 {
			break
		}
		ids := make([]int64, len(page.Members))
		for i, m := range page.Members {
			ids[i] = m.UserId
		}
		if err := t.pushPage(ctx, job, ids); err != nil {
			return err
		}
		after = ids[len(ids)-1]
		if _, err := t.repo.SaveJobCursor(ctx, &repoapi.SaveJobCursorReq{JobId: id, Cursor: after}); err != nil {
			return fmt.Errorf("save progress of %s: %w", id, err)
		}
		t.fan.batches.Inc()
		if len(page.Members) < int(batch) {
			break
		}
	}
	if _, err := t.repo.SaveJobCursor(ctx, &repoapi.SaveJobCursorReq{JobId: id, Cursor: after, Done: true}); err != nil {
		return fmt.Errorf("finish %s: %w", id, err)
	}
	t.fan.jobs.Inc()
	return nil
}

// pushPage publishes one record per live gateway holding any of the users.
func (t *Task) pushPage(ctx context.Context, job pushq.FanoutJob, ids []int64) error {
	routes, err := t.repo.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: ids})
	if err != nil {
		return fmt.Errorf("routes of %d members: %w", len(ids), err)
	}
	byGateway := map[string][]int64{}
	for uid, gws := range routes.Routes {
		if job.Resend && uid == job.Message.SenderID {
			continue // a resend's pushes leave out the sender (pushq.FanoutJob.Resend)
		}
		for _, gw := range gws {
			if t.gateways == nil || t.gateways.Alive(gw) {
				byGateway[gw] = append(byGateway[gw], uid)
			}
		}
	}
	for gw, uids := range byGateway {
		topic := pushq.GatewayTopic(gw)
		if topic == "" {
			continue
		}
		slices.Sort(uids)
		p := pushq.Push{Message: job.Message, Recipients: uids, OriginConn: job.OriginConn}
		value, err := p.Encode()
		if err != nil {
			return fmt.Errorf("encode push: %w", err)
		}
		if err := t.bus.Publish(ctx, topic, p.Key(), value); err != nil {
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		t.fan.records.Inc()
	}
	return nil
}
