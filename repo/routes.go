package repo

import (
	"context"

	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// Connect records one more socket of a user on a gateway.
func (h *Handler) Connect(ctx context.Context, req *repoapi.ConnectReq) (*repoapi.ConnectResp, error) {
	first, err := h.kv.Connect(ctx, req.UserId, req.GatewayId)
	if err != nil {
		return nil, h.toWire("connect", err)
	}
	return &repoapi.ConnectResp{First: first}, nil
}

// ConnectBatch records one more socket per entry (a user may repeat), in order.
func (h *Handler) ConnectBatch(ctx context.Context, req *repoapi.ConnectBatchReq) (*repoapi.ConnectBatchResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	first, err := h.kv.ConnectMany(ctx, req.UserIds, req.GatewayId)
	if err != nil {
		return nil, h.toWire("connect batch", err)
	}
	return &repoapi.ConnectBatchResp{First: first}, nil
}

// Disconnect records one socket fewer of a user on a gateway.
func (h *Handler) Disconnect(ctx context.Context, req *repoapi.DisconnectReq) (*repoapi.DisconnectResp, error) {
	last, err := h.kv.Disconnect(ctx, req.UserId, req.GatewayId)
	if err != nil {
		return nil, h.toWire("disconnect", err)
	}
	return &repoapi.DisconnectResp{Last: last}, nil
}

// DisconnectBatch records one socket fewer per entry (a user may repeat), in order.
func (h *Handler) DisconnectBatch(ctx context.Context, req *repoapi.DisconnectBatchReq) (*repoapi.DisconnectBatchResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	last, err := h.kv.DisconnectMany(ctx, req.UserIds, req.GatewayId)
	if err != nil {
		return nil, h.toWire("disconnect batch", err)
	}
	return &repoapi.DisconnectBatchResp{Last: last}, nil
}

// RefreshRoutes keeps a gateway's routes alive for another route TTL.
func (h *Handler) RefreshRoutes(ctx context.Context, req *repoapi.RefreshRoutesReq) (*repoapi.RefreshRoutesResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	var err error
	if len(req.Counts) > 0 {
		if len(req.Counts) != len(req.UserIds) {
			return nil, badRequest("counts must match user_ids")
		}
		err = h.kv.Sync(ctx, req.GatewayId, req.UserIds, req.Counts)
	} else {
		err = h.kv.Refresh(ctx, req.GatewayId, req.UserIds)
	}
	if err != nil {
		return nil, h.toWire("refresh routes", err)
	}
	return &repoapi.RefreshRoutesResp{}, nil
}

// GetRoutes returns the gateways of each online user among user_ids.
func (h *Handler) GetRoutes(ctx context.Context, req *repoapi.GetRoutesReq) (*repoapi.GetRoutesResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	routes, err := h.kv.Routes(ctx, req.UserIds)
	if err != nil {
		return nil, h.toWire("get routes", err)
	}
	return &repoapi.GetRoutesResp{Routes: routes}, nil
}

// GetJobCursor returns how far a resumable job got.
func (h *Handler) GetJobCursor(ctx context.Context, req *repoapi.GetJobCursorReq) (*repoapi.GetJobCursorResp, error) {
	cur, done, err := h.kv.JobCursor(ctx, req.JobId)
	if err != nil {
		return nil, h.toWire("get job cursor", err)
	}
	return &repoapi.GetJobCursorResp{Cursor: cur, Done: done}, nil
}

// SaveJobCursor records how far a resumable job got.
func (h *Handler) SaveJobCursor(ctx context.Context, req *repoapi.SaveJobCursorReq) (*repoapi.SaveJobCursorResp, error) {
	if err := h.kv.SaveJobCursor(ctx, req.JobId, req.Cursor, req.Done); err != nil {
		return nil, h.toWire("save job cursor", err)
	}
	return &repoapi.SaveJobCursorResp{}, nil
}
