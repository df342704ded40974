// Package browsertest drives the admin dashboard in a real headless
// Chromium (Debian's chromium package) through chromedp, against
// examples/chatservice on a real redis-server. It is its own module so the
// library's go.mod gains no browser dependency. Its tests skip without a
// chromium binary unless BOUNDED_REQUIRE_BROWSER=1 (CI sets it).
package browsertest
