package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/cloudwego/hertz/pkg/common/hlog"
	"github.com/cloudwego/kitex/pkg/klog"
)

// bridge sends Kitex and Hertz framework logs to slog, so all three share one handler
// and one level (the admin /log_level). Their Trace/Notice map to Debug/Info and
// Fatal to Error: a framework must not exit the process.
type bridge struct {
	log *slog.Logger
}

func (b bridge) emit(ctx context.Context, l slog.Level, msg string) {
	if ctx == nil {
		ctx = context.Background()
	}
	b.log.Log(ctx, l, msg)
}

func (b bridge) Trace(v ...any)  { b.emit(nil, slog.LevelDebug, fmt.Sprint(v...)) }
func (b bridge) Debug(v ...any)  { b.emit(nil, slog.LevelDebug, fmt.Sprint(v...)) }
func (b bridge) Info(v ...any)   { b.emit(nil, slog.LevelInfo, fmt.Sprint(v...)) }
func (b bridge) Notice(v ...any) { b.emit(nil, slog.LevelInfo, fmt.Sprint(v...)) }
func (b bridge) Warn(v ...any)   { b.emit(nil, slog.LevelWarn, fmt.Sprint(v...)) }
func (b bridge) Error(v ...any)  { b.emit(nil, slog.LevelError, fmt.Sprint(v...)) }
func (b bridge) Fatal(v ...any)  { b.emit(nil, slog.LevelError, fmt.Sprint(v...)) }

func (b bridge) Tracef(f string, v ...any)  { b.emit(nil, slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (b bridge) Debugf(f string, v ...any)  { b.emit(nil, slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (b bridge) Infof(f string, v ...any)   { b.emit(nil, slog.LevelInfo, fmt.Sprintf(f, v...)) }
func (b bridge) Noticef(f string, v ...any) { b.emit(nil, slog.LevelInfo, fmt.Sprintf(f, v...)) }
func (b bridge) Warnf(f string, v ...any)   { b.emit(nil, slog.LevelWarn, fmt.Sprintf(f, v...)) }
func (b bridge) Errorf(f string, v ...any)  { b.emit(nil, slog.LevelError, fmt.Sprintf(f, v...)) }
func (b bridge) Fatalf(f string, v ...any)  { b.emit(nil, slog.LevelError, fmt.Sprintf(f, v...)) }

func (b bridge) CtxTracef(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelDebug, fmt.Sprintf(f, v...))
}
func (b bridge) CtxDebugf(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelDebug, fmt.Sprintf(f, v...))
}
func (b bridge) CtxInfof(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelInfo, fmt.Sprintf(f, v...))
}
func (b bridge) CtxNoticef(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelInfo, fmt.Sprintf(f, v...))
}
func (b bridge) CtxWarnf(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelWarn, fmt.Sprintf(f, v...))
}
func (b bridge) CtxErrorf(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelError, fmt.Sprintf(f, v...))
}
func (b bridge) CtxFatalf(ctx context.Context, f string, v ...any) {
	b.emit(ctx, slog.LevelError, fmt.Sprintf(f, v...))
}

// SetOutput is ignored: output is the slog handler's.
func (b bridge) SetOutput(io.Writer) {}

type kitexBridge struct{ bridge }

// SetLevel is ignored: the shared slog.LevelVar decides.
func (kitexBridge) SetLevel(klog.Level) {}

type hertzBridge struct{ bridge }

// SetLevel is ignored: the shared slog.LevelVar decides.
func (hertzBridge) SetLevel(hlog.Level) {}

// bridgeFrameworkLogs is called once, from main (framework loggers are process globals).
func bridgeFrameworkLogs(log *slog.Logger) {
	klog.SetLogger(kitexBridge{bridge{log.With("framework", "kitex")}})
	hl := hertzBridge{bridge{log.With("framework", "hertz")}}
	hlog.SetLogger(hl)
	hlog.SetSystemLogger(hl)
}
