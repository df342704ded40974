package grpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bounded-go/bounded/ratelimit"
)

// KeyFunc returns the key whose limit a call spends, from the call's
// context (incoming metadata, peer) and its full method name
// ("/package.Service/Method"). A key of "" exempts the call: the key
// function decides who is limited (an error for "" would turn a key
// function's bug into an outage of every call it misses), so test yours.
type KeyFunc func(ctx context.Context, fullMethod string) string

// KeyFromMetadata keys a call by the first value of an incoming metadata
// field (an API key, a tenant); a call without it is exempt.
func KeyFromMetadata(name string) KeyFunc {
	return func(ctx context.Context, _ string) string {
		if v := metadata.ValueFromIncomingContext(ctx, name); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// KeyFromPeer keys a call by the client's address without its port (the
// IP for TCP); a call without a peer is exempt. Behind a proxy every call
// has the proxy's address: key by metadata the proxy sets instead.
func KeyFromPeer() KeyFunc {
	return func(ctx context.Context, _ string) string {
		p, ok := peer.FromContext(ctx)
		if !ok || p.Addr == nil {
			return ""
		}
		a := p.Addr.String()
		if host, _, err := net.SplitHostPort(a); err == nil {
			return host
		}
		return a
	}
}

// PerMethod keys a call by its full method name and key's key, so that each
// method has its own limit per caller; a call key exempts stays exempt.
func PerMethod(key KeyFunc) KeyFunc {
	return func(ctx context.Context, fullMethod string) string {
		k := key(ctx, fullMethod)
		if k == "" {
			return ""
		}
		return fullMethod + " " + k
	}
}

// Option configures an interceptor.
type Option func(*config)

type config struct {
	key    KeyFunc
	keySet bool
	limits func(ctx context.Context, fullMethod string) []ratelimit.Limit
	skip   func(ctx context.Context, fullMethod string) bool
	errs   []error
}

// WithKey sets the key function, which the interceptors require.
func WithKey(key KeyFunc) Option {
	return func(c *config) {
		if key == nil {
			c.errs = append(c.errs, errors.New("WithKey: nil key function"))
		}
		c.key, c.keySet = key, true
	}
}

// WithLimits gives each call its limits (ratelimit.Limiter.AllowLimits),
// for quotas that depend on the caller or the method; without it the
// Limiter's own limit applies. Limits AllowLimits refuses fail the call
// with codes.Internal: the function is wrong, not the client.
func WithLimits(limits func(ctx context.Context, fullMethod string) []ratelimit.Limit) Option {
	return func(c *config) {
		if limits == nil {
			c.errs = append(c.errs, errors.New("WithLimits: nil limits function"))
		}
		c.limits = limits
	}
}

// WithSkip exempts the calls for which skip returns true (health checks,
// reflection), before the key function runs.
func WithSkip(skip func(ctx context.Context, fullMethod string) bool) Option {
	return func(c *config) {
		if skip == nil {
			c.errs = append(c.errs, errors.New("WithSkip: nil predicate"))
		}
		c.skip = skip
	}
}

// ErrInvalidConfig is wrapped by the errors the interceptor constructors
// return; the message names the option.
var ErrInvalidConfig = errors.New("grpc ratelimit: invalid config")

func newConfig(l *ratelimit.Limiter, opts []Option) (*config, error) {
	c := &config{}
	for _, o := range opts {
		o(c)
	}
	if l == nil {
		c.errs = append(c.errs, errors.New("nil Limiter"))
	}
	if !c.keySet {
		c.errs = append(c.errs, errors.New("WithKey is required: the key function says whose limit a call spends"))
	}
	if len(c.errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(c.errs...))
	}
	return c, nil
}

// UnaryServerInterceptor limits unary calls: one event per call.
func UnaryServerInterceptor(l *ratelimit.Limiter, opts ...Option) (grpc.UnaryServerInterceptor, error) {
	c, err := newConfig(l, opts)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, err := c.decide(ctx, l, info.FullMethod)
		if err != nil {
			if md != nil {
				_ = grpc.SetTrailer(ctx, md)
			}
			return nil, err
		}
		if md != nil {
			_ = grpc.SetHeader(ctx, md)
		}
		return handler(ctx, req)
	}, nil
}

// StreamServerInterceptor limits streams: one event per stream, when it
// opens; the messages on it are not counted.
func StreamServerInterceptor(l *ratelimit.Limiter, opts ...Option) (grpc.StreamServerInterceptor, error) {
	c, err := newConfig(l, opts)
	if err != nil {
		return nil, err
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		md, err := c.decide(ss.Context(), l, info.FullMethod)
		if err != nil {
			if md != nil {
				ss.SetTrailer(md)
			}
			return err
		}
		if md != nil {
			_ = ss.SetHeader(md)
		}
		return handler(srv, ss)
	}, nil
}

// decide spends one event of the call's key. It returns the metadata to
// send (nil for an exempt call) and, for a call that must not be handled,
// its status error.
func (c *config) decide(ctx context.Context, l *ratelimit.Limiter, method string) (metadata.MD, error) {
	if c.skip != nil && c.skip(ctx, method) {
		return nil, nil
	}
	key := c.key(ctx, method)
	if key == "" {
		return nil, nil
	}
	var res ratelimit.Result
	var err error
	if c.limits != nil {
		res, err = l.AllowLimits(ctx, key, 1, c.limits(ctx, method)...)
	} else {
		res, err = l.Allow(ctx, key)
	}
	if err != nil {
		// The key is often a credential (an API key from metadata): no
		// status message carries the limiter's error, which names it.
		switch {
		case errors.Is(err, ratelimit.ErrInvalidArgument):
			return nil, status.Error(codes.Internal, invalidLimits(err))
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		default:
			return nil, status.Error(codes.Unavailable, "rate limiter unavailable")
		}
	}
	md := metadata.Pairs(
		"ratelimit-limit", strconv.Itoa(res.Limit),
		"ratelimit-remaining", strconv.Itoa(res.Remaining),
		"ratelimit-reset", seconds(res.ResetAfter),
	)
	if res.Allowed {
		return md, nil
	}
	md.Set("retry-after", seconds(res.RetryAfter))
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("rate limit exceeded: retry after %s", res.RetryAfter))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(res.RetryAfter)}); err == nil {
		st = d
	}
	return md, st.Err()
}

// seconds renders d in whole seconds, rounded up, so that a client that
// waits that long is admitted.
func seconds(d time.Duration) string {
	s := d / time.Second
	if d%time.Second > 0 {
		s++
	}
	return strconv.FormatInt(int64(s), 10)
}

// invalidLimits is the status message of limits the limiter refused: what
// was wrong with them (the field and value), without the key, which the
// limiter's error also names.
func invalidLimits(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "rate limit misconfigured for this method: " + msg
}
