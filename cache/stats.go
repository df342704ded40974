package cache

import "sync/atomic"

// Stats is a snapshot of a cache's counters (counted since New) and of its
// local tier.
type Stats struct {
	// LocalHits counts Get and GetOrLoad calls the local tier answered,
	// negative-cache entries included.
	LocalHits uint64 `json:"local_hits"`
	// RedisHits counts reads Redis answered with a value or a negative
	// entry after a local miss.
	RedisHits uint64 `json:"redis_hits"`
	// Misses counts reads that found the key in neither tier.
	Misses uint64 `json:"misses"`
	// Loads counts loader calls made by this instance.
	Loads uint64 `json:"loads"`
	// LoadErrors counts loader calls that failed (ErrNotFound is an
	// answer, not a failure) or returned a value that could not be written.
	LoadErrors uint64 `json:"load_errors"`
	// LoadWaiters counts GetOrLoad callers that shared a load another
	// caller of this process started.
	LoadWaiters uint64 `json:"load_waiters"`
	// LoaderWaits counts GetOrLoad calls that waited for a loader: their
	// key was in neither tier and their flight called its loader or waited
	// for another instance's. With Config.RefreshAfter it stays flat after
	// each key's first load while the key is read more often than it
	// expires.
	LoaderWaits uint64 `json:"loader_waits"`
	// Refreshes counts refresh-ahead loads this instance ran (they count in
	// Loads too); RefreshErrors those that failed (the loader or Redis: the
	// old value serves on until its TTL); RefreshesSkipped refreshes that
	// were due but found no refresher or load slot free (or the cache was
	// not started), to be asked for again by a later read.
	Refreshes        uint64 `json:"refreshes"`
	RefreshErrors    uint64 `json:"refresh_errors"`
	RefreshesSkipped uint64 `json:"refreshes_skipped"`
	// LockWaits counts loads this instance waited for because another
	// instance held the key's load lock.
	LockWaits uint64 `json:"lock_waits"`
	// LoadsInFlight is the number of loads (flights) running now.
	LoadsInFlight int `json:"loads_in_flight"`
	// LoadsRefused counts GetOrLoad flights that failed with
	// ErrTooManyLoads because Config.MaxLoads loads were in progress.
	LoadsRefused uint64 `json:"loads_refused"`
	// DecodeErrors counts values found in Redis that the codec could not
	// decode (written with another V, for instance); each was deleted, and
	// GetOrLoad loaded the key as a miss.
	DecodeErrors uint64 `json:"decode_errors"`
	// RedisErrors counts Redis calls that failed, pool.ErrUnavailable
	// included.
	RedisErrors uint64 `json:"redis_errors"`
	// Evictions counts local entries removed to keep the bounds;
	// Expirations those removed because they expired.
	Evictions   uint64 `json:"evictions"`
	Expirations uint64 `json:"expirations"`
	// InvalidationsSent and InvalidationsReceived count invalidation
	// messages published by this instance and applied from others.
	InvalidationsSent     uint64 `json:"invalidations_sent"`
	InvalidationsReceived uint64 `json:"invalidations_received"`
	// BadMessages counts messages on the channel that could not be read.
	BadMessages uint64 `json:"bad_messages"`
	// TagEvictions counts keys a tagged write evicted from a tag that was
	// full (Config.MaxTagMembers), deleting their values; TagInvalidations
	// counts InvalidateTag calls that finished, TagKeysInvalidated the keys
	// they removed.
	TagEvictions       uint64 `json:"tag_evictions"`
	TagInvalidations   uint64 `json:"tag_invalidations"`
	TagKeysInvalidated uint64 `json:"tag_keys_invalidated"`
	// InvalidationMode is how the subscriber hears of changes: "pubsub"
	// (the cache's channel) or "tracking" (the channel and Redis's
	// client-side-caching invalidations, Config.TrackRawWrites); "" until
	// it first connects, or without a subscriber.
	InvalidationMode string `json:"invalidation_mode"`
	// TrackingInvalidations counts client-side-caching invalidation
	// messages applied (each lists one or more keys, or says "flush").
	TrackingInvalidations uint64 `json:"tracking_invalidations"`
	// Flushes counts times the whole local tier was dropped: on every
	// (re)subscription and on a flush message.
	Flushes uint64 `json:"flushes"`
	// Subscribes counts subscriptions of the invalidation subscriber, the
	// first one included: above 1, it reconnected.
	Subscribes uint64 `json:"subscribes"`
	// Subscribed reports whether the invalidation subscriber is listening.
	Subscribed bool `json:"subscribed"`
	// LocalEntries and LocalBytes are the local tier's size now; bytes
	// count each entry's key and encoded value.
	LocalEntries int64 `json:"local_entries"`
	LocalBytes   int64 `json:"local_bytes"`
}

type counters struct {
	redisHits        atomic.Uint64
	misses           atomic.Uint64
	loads            atomic.Uint64
	loadErrors       atomic.Uint64
	loadWaiters      atomic.Uint64
	loaderWaits      atomic.Uint64
	refreshes        atomic.Uint64
	refreshErrs      atomic.Uint64
	refreshesSkipped atomic.Uint64
	loadsRefused     atomic.Uint64
	lockWaits        atomic.Uint64
	lockTokens       atomic.Uint64
	redisErrors      atomic.Uint64
	decodeErrors     atomic.Uint64
	invalSent        atomic.Uint64
	invalReceived    atomic.Uint64
	badMessages      atomic.Uint64
	flushes          atomic.Uint64
	subscribes       atomic.Uint64

	tagEvictions       atomic.Uint64
	tagInvalidations   atomic.Uint64
	tagKeysInvalidated atomic.Uint64
	trackingInval      atomic.Uint64
}

// Stats returns the cache's counters and the local tier's size. It takes
// each shard's read lock briefly and is cheap enough for a metrics scrape.
func (c *Cache[V]) Stats() Stats {
	s := Stats{
		RedisHits:             c.st.redisHits.Load(),
		Misses:                c.st.misses.Load(),
		Loads:                 c.st.loads.Load(),
		LoadErrors:            c.st.loadErrors.Load(),
		LoadWaiters:           c.st.loadWaiters.Load(),
		LockWaits:             c.st.lockWaits.Load(),
		LoaderWaits:           c.st.loaderWaits.Load(),
		Refreshes:             c.st.refreshes.Load(),
		RefreshErrors:         c.st.refreshErrs.Load(),
		RefreshesSkipped:      c.st.refreshesSkipped.Load(),
		LoadsInFlight:         c.loads.inFlight(),
		LoadsRefused:          c.st.loadsRefused.Load(),
		RedisErrors:           c.st.redisErrors.Load(),
		DecodeErrors:          c.st.decodeErrors.Load(),
		InvalidationsSent:     c.st.invalSent.Load(),
		InvalidationsReceived: c.st.invalReceived.Load(),
		BadMessages:           c.st.badMessages.Load(),
		Flushes:               c.st.flushes.Load(),
		Subscribes:            c.st.subscribes.Load(),
		Subscribed:            c.subscribed.Load(),
		TagEvictions:          c.st.tagEvictions.Load(),
		TagInvalidations:      c.st.tagInvalidations.Load(),
		TagKeysInvalidated:    c.st.tagKeysInvalidated.Load(),
		InvalidationMode:      c.track.modeName(),
		TrackingInvalidations: c.st.trackingInval.Load(),
	}
	if c.local != nil {
		ls := c.local.stats()
		s.LocalHits = ls.hits
		s.Evictions = ls.evictions
		s.Expirations = ls.expirations
		s.LocalEntries = ls.entries
		s.LocalBytes = ls.bytes
	}
	return s
}
