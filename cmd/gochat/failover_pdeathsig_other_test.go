//go:build !linux

package main

import "syscall"

// foSysProcAttr: no parent-death signal outside Linux; the processes' lifetime is
// still capped by the test's context.
func foSysProcAttr() *syscall.SysProcAttr { return nil }
