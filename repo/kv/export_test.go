package kv

// MemoryRouteUsers is the number of users Memory holds routes for, expired
// ones not yet swept included.
func MemoryRouteUsers(m *Memory) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.routes)
}
