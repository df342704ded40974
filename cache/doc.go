// Package cache is a two-tier typed cache: a bounded local tier in front of
// Redis.
package cache
