// A minimal DOM for running app.js under node in TestPageScriptRenders:
// enough for the page's own calls, and it records every element created.
"use strict";
const base = process.argv[2];
const hashes = JSON.parse(process.argv[3]);
const created = [];
class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.listeners = {}; this._text = null; this.hidden = false;
    this.classList = { add: (c) => { this.attrs.class = ((this.attrs.class || "") + " " + c).trim(); } }; }
  append(...ks) { for (const k of ks) { if (typeof k === "string") this.children.push(new Text(k)); else if (k instanceof Node || k instanceof Text) this.children.push(k); else throw new Error("append of a non-node: " + typeof k); } }
  replaceChildren(...ks) { this.children = []; this.append(...ks); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  addEventListener(ev, f) { this.listeners[ev] = f; }
  set textContent(s) { this.children = [new Text(String(s))]; }
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
}
class Text { constructor(s) { this.data = s; } get textContent() { return this.data; } }
const byId = {};
for (const id of ["main", "error", "notice", "refresh", "mode", "nav-memory"]) byId[id] = new Node("div");
const listeners = {};
global.document = {
  createElement: (t) => { const n = new Node(t); created.push(t); return n; },
  createElementNS: (ns, t) => { const n = new Node(t); created.push(t); return n; },
  createTextNode: (s) => new Text(s),
  getElementById: (id) => byId[id],
  addEventListener: (ev, f) => { listeners[ev] = f; },
};
global.location = { hash: "" };
global.window = { addEventListener: () => {}, confirm: () => true };
const realFetch = fetch;
global.fetch = (url, opts) => realFetch(base + url, opts);
require(process.argv[4]);
(async () => {
  await listeners.DOMContentLoaded();
  const out = {};
  for (const h of hashes) {
    location.hash = h;
    // start() ends with the route's rendering, so awaiting it waits for the page.
    byId.main.replaceChildren();
    await listeners.DOMContentLoaded();
    out[h] = { text: byId.main.textContent, error: byId.error.textContent };
  }
  out.created = [...new Set(created)].sort();
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e.stack); process.exit(1); });
