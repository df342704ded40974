// Package grpc limits gRPC servers with a bounded ratelimit.Limiter: a
// unary and a stream server interceptor that spend one event per call (per
// stream, not per message) for the key a key function gives.
//
//	api, _ := ratelimit.New(p, "grpc", ratelimit.Config{Rate: 100, Burst: 20})
//	unary, err := bgrpc.UnaryServerInterceptor(api, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
//	stream, err := bgrpc.StreamServerInterceptor(api, bgrpc.WithKey(bgrpc.KeyFromMetadata("x-api-key")))
//	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
//
// A denied call is not handled: it fails with codes.ResourceExhausted, a
// google.rpc.RetryInfo detail holding the RetryAfter, and trailer metadata
// retry-after (whole seconds, rounded up) with ratelimit-limit,
// ratelimit-remaining and ratelimit-reset, the names of the HTTP headers of
// ratelimit.Limiter.Middleware. An admitted call carries the three
// ratelimit-* values as header metadata. A key of "" exempts the call.
// While Redis is unavailable the Limiter's Config.OnRedisError answers. A
// call whose context ends before Redis answers fails with the context's
// code (Canceled, DeadlineExceeded), a limiter that cannot answer at all
// (its pool closed) with Unavailable, and limits the Limiter refuses with
// Internal. No status message names the key, which is often a credential.
//
// The interceptors start nothing and hold nothing to close. This is its own
// Go module, so that bounded's core module never depends on gRPC.
package grpc
