#!/usr/bin/env node
// Real-browser scenario against a running gateway: headless Chromium (the system package,
// never a downloaded browser) loads page.html from ANOTHER origin than the API, logs two
// users in with fetch (CORS preflights, as the Vue client's Axios does), opens the
// browser's own WebSockets and exchanges messages, in the world room and (unless
// --one-to-one=false) in a 1:1 conversation created by POST /api/friends.
//
//   node chat.mjs --api http://localhost:PORT/api --ws ws://localhost:PORT/ws \
//                 --page http://127.0.0.1:OTHERPORT/page.html [--one-to-one=false]
//                 [--chromium /usr/bin/chromium] [--headed]
//
// Prints one JSON summary line on stdout ({"ok":true,...} or {"ok":false,"step":..,
// "error":..}) and exits non-zero on any failure. Progress goes to stderr.
import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';

const WAIT_MS = 10_000;     // upper bound of every single wait
const ACK_MS = 5_000;       // the client fails a message without an ack within 5 s
const WATCHDOG_MS = 80_000; // the whole run (the Go test allows 90 s)

// ---- arguments ----

function usage(msg) {
  process.stderr.write(`chat.mjs: ${msg}\nusage: node chat.mjs --api URL --ws URL --page URL [--one-to-one[=true|false]] [--no-one-to-one] [--chromium PATH] [--headed]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { api: '', ws: '', page: '', oneToOne: true, chromium: process.env.CHROMIUM || '/usr/bin/chromium', headed: false };
  const bool = (v, name) => {
    if (v === undefined || /^(1|true|on|yes)$/i.test(v)) return true;
    if (/^(0|false|off|no)$/i.test(v)) return false;
    usage(`bad boolean for ${name}: ${v}`);
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = () => (v !== undefined ? v : (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`)));
    switch (a) {
      case '--api': o.api = val().replace(/\/+$/, ''); break;
      case '--ws': o.ws = val(); break;
      case '--page': o.page = val(); break;
      case '--chromium': o.chromium = val(); break;
      case '--one-to-one': o.oneToOne = bool(v, a); break;
      case '--no-one-to-one': o.oneToOne = false; break;
      case '--headed': o.headed = bool(v, a); break;
      case '-h': case '--help': usage('help');
      default: usage(`unknown argument ${a}`);
    }
  }
  for (const k of ['api', 'ws', 'page']) if (!o[k]) usage(`--${k} is required`);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const pageOrigin = new URL(opts.page).origin;
const apiOrigin = new URL(opts.api).origin;

// ---- bookkeeping and failure ----

const t0 = Date.now();
const summary = { ok: false, page: pageOrigin, api: apiOrigin, oneToOne: opts.oneToOne, steps: [] };
let step = 'start';
let browser = null;
const clients = []; // {label, page, user, token, consoleErrors, badCors}

function progress(msg) {
  process.stderr.write(`[chat.mjs +${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}\n`);
}

function begin(name) {
  step = name;
  summary.steps.push(name);
  progress(name);
}

class Failure extends Error {}
function fail(msg) { throw new Failure(msg); }
function check(cond, msg) { if (!cond) fail(msg); }

async function dumpAndExit(err) {
  summary.ok = false;
  summary.step = step;
  if (err instanceof Failure) {
    summary.error = err.message;
  } else {
    // Playwright errors carry the page's stack: one line in the summary, all on stderr.
    summary.error = String((err && err.message) || err).split('\n')[0];
    process.stderr.write(`${(err && err.stack) || err}\n`);
  }
  summary.durationMs = Date.now() - t0;
  for (const c of clients) {
    try {
      const st = await withTimeout(c.page.evaluate(() => ({ frames: window.frames_, closes: window.closes_ })), 2000, 'dump');
      process.stderr.write(`--- page ${c.label} (${c.user ? c.user.username : 'not logged in'}): frames received ---\n`);
      for (const f of st.frames.slice(-30)) process.stderr.write(`  ${JSON.stringify(f)}\n`);
      if (st.closes.length) process.stderr.write(`  socket closes: ${JSON.stringify(st.closes)}\n`);
    } catch (e) {
      process.stderr.write(`--- page ${c.label}: state unavailable (${e.message}) ---\n`);
    }
    if (c.consoleErrors.length) process.stderr.write(`--- page ${c.label}: console errors ---\n  ${c.consoleErrors.join('\n  ')}\n`);
  }
  process.stdout.write(JSON.stringify(summary) + '\n');
  try { if (browser) await withTimeout(browser.close(), 5000, 'browser close'); } catch { /* exiting anyway */ }
  process.exit(1);
}

function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Failure(`${what}: no result within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

const watchdog = setTimeout(() => {
  dumpAndExit(new Failure(`whole run exceeded ${WATCHDOG_MS} ms (stuck in step "${step}")`));
}, WATCHDOG_MS);

// ---- page helpers ----

const rand = () => randomBytes(4).toString('hex');

// call runs the page's Axios-like request and returns {status, body}.
async function call(c, method, path, body) {
  const r = await withTimeout(
    c.page.evaluate(([m, p, b]) => window.gochat.api(m, p, b === null ? undefined : b), [method, path, body === undefined ? null : body]),
    WAIT_MS + 1000, `${c.label}: ${method} ${path}`);
  return r;
}

function describe(r) {
  return r.body ? `HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}` : `HTTP ${r.status} (not JSON) ${JSON.stringify(r.text)}`;
}

// want asserts an envelope success with the given status and returns data.
function want(c, what, r, status) {
  check(r.status === status && r.body && r.body.success === true,
    `${c.label}: ${what}: want HTTP ${status} success envelope, got ${describe(r)}`);
  return r.body.data;
}

// waitFrame polls the page's frames_ until fn (run in the page, with arg) returns a
// frame. A socket close while waiting fails at once.
async function waitFrame(c, what, fn, arg, ms = WAIT_MS) {
  let h;
  try {
    h = await c.page.waitForFunction(
      ([src, a]) => {
        const pred = new Function('f', 'a', 'return (' + src + ')(f, a)');
        const f = window.frames_.find((x) => pred(x, a));
        if (f) return { frame: f };
        if (window.closes_.length) return { closed: window.closes_[0] };
        return null;
      },
      [fn.toString(), arg], { timeout: ms, polling: 20 });
  } catch (e) {
    if (/Timeout/i.test(e.message)) fail(`${c.label}: no ${what} within ${ms} ms`);
    throw e;
  }
  const v = await h.jsonValue();
  if (v.closed) fail(`${c.label}: WebSocket closed (code ${v.closed.code} "${v.closed.reason}") while waiting for ${what}`);
  return v.frame;
}

async function frames(c) {
  return withTimeout(c.page.evaluate(() => window.frames_), WAIT_MS, `${c.label}: read frames`);
}

// ---- the scenario ----

async function openClient(ctx, label) {
  const page = await ctx.newPage();
  const c = { label, page, user: null, token: '', consoleErrors: [], badCors: [], preflights: null };
  clients.push(c);
  page.on('console', (m) => { if (m.type() === 'error') c.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => c.consoleErrors.push(`pageerror: ${e.message}`));
  // Every API response must echo this page's Origin exactly (contract.md §1).
  page.on('response', async (res) => {
    if (!res.url().startsWith(opts.api)) return;
    try {
      const h = await res.allHeaders();
      const acao = h['access-control-allow-origin'];
      if (acao !== pageOrigin) c.badCors.push(`${res.request().method()} ${res.url()}: Access-Control-Allow-Origin ${JSON.stringify(acao)}, want ${JSON.stringify(pageOrigin)}`);
    } catch { /* page closing */ }
  });
  // Count the CORS preflights Chromium sends (DevTools reports them as type "Preflight").
  try {
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    c.preflights = 0;
    cdp.on('Network.requestWillBeSent', (e) => {
      if (e.type === 'Preflight' || (e.request && e.request.method === 'OPTIONS')) c.preflights++;
    });
  } catch (e) {
    progress(`${label}: cannot observe preflights (${e.message}); not counted`);
  }
  const url = new URL(opts.page);
  url.searchParams.set('api', opts.api);
  url.searchParams.set('ws', opts.ws);
  url.searchParams.set('name', label);
  const resp = await page.goto(url.toString(), { timeout: WAIT_MS, waitUntil: 'load' });
  check(resp && resp.ok(), `${label}: loading ${opts.page}: HTTP ${resp && resp.status()}`);
  await page.waitForFunction(() => window.gochatReady === true, null, { timeout: WAIT_MS });
  return c;
}

async function registerAndLogin(c, username) {
  const password = 'pw-' + rand();
  const reg = await call(c, 'POST', '/auth/register', { username, password });
  const regData = want(c, 'POST /auth/register', reg, 201);
  check(regData && regData.user && regData.user.username === username, `${c.label}: register returned ${JSON.stringify(regData)}`);
  const lg = await call(c, 'POST', '/auth/login', { username, password });
  const d = want(c, 'POST /auth/login', lg, 200);
  check(d && typeof d.token === 'string' && d.token !== '', `${c.label}: login returned no token: ${JSON.stringify(d)}`);
  check(d.user && typeof d.user.userId === 'string' && d.user.userId !== '' && d.user.username === username && d.user.isGuest === false,
    `${c.label}: login user = ${JSON.stringify(d.user)}`);
  c.user = d.user;
  c.token = d.token;
  await withTimeout(c.page.evaluate((t) => window.gochat.setToken(t), d.token), WAIT_MS, 'setToken');
}

async function conversations(c) {
  const r = await call(c, 'GET', '/conversations');
  const list = want(c, 'GET /conversations', r, 200);
  check(Array.isArray(list) && list.length >= 1, `${c.label}: GET /conversations: want a non-empty array, got ${JSON.stringify(list)}`);
  check(list[0].conversationId === 'world' && list[0].type === 'world',
    `${c.label}: GET /conversations: world must be first, got ${JSON.stringify(list[0])}`);
  return list;
}

async function connect(c) {
  try {
    await withTimeout(c.page.evaluate(() => window.gochat.connect()), WAIT_MS, `${c.label}: WebSocket open`);
  } catch (e) {
    fail(`${c.label}: WebSocket to ${opts.ws} did not open: ${e.message}`);
  }
  const f = await waitFrame(c, '"connected" frame', (f) => f.type === 'connected');
  check(f.data && f.data.userId === c.user.userId && f.data.connectionId,
    `${c.label}: connected frame ${JSON.stringify(f)} (want userId ${c.user.userId} and a connectionId)`);
}

// exchange sends one text from `from` in conv and checks the ack and the delivery to `to`.
async function exchange(from, to, conv, label) {
  const tempMessageId = `tmp-${label}-${rand()}`;
  const content = `${label} from ${from.user.username} ${rand()} — héllo ✓`;
  const sentAt = await withTimeout(
    from.page.evaluate((d) => { window.gochat.send('send-message', d); return Date.now(); },
      { conversationId: conv, content, messageType: 'text', tempMessageId }),
    WAIT_MS, `${from.label}: send`);
  const ack = await waitFrame(from, `message-ack for ${tempMessageId}`,
    (f, t) => (f.type === 'message-ack' || f.type === 'error') && f.data && f.data.tempMessageId === t, tempMessageId, ACK_MS);
  check(ack.type === 'message-ack', `${from.label}: send in ${conv} answered with ${JSON.stringify(ack)}`);
  const a = ack.data;
  check(typeof a.messageId === 'string' && a.messageId !== '' && a.conversationId === conv && typeof a.seqId === 'number',
    `${from.label}: bad message-ack ${JSON.stringify(a)}`);
  const ackMs = ack.at - sentAt;
  check(ackMs <= ACK_MS, `${from.label}: ack after ${ackMs} ms (> ${ACK_MS})`);

  const nm = await waitFrame(to, `new-message ${a.messageId} in ${conv}`,
    (f, id) => f.type === 'new-message' && f.data && f.data.message && f.data.message.messageId === id, a.messageId);
  const m = nm.data.message;
  check(nm.data.conversationId === conv && m.conversationId === conv && m.content === content &&
    m.senderId === from.user.userId && m.seqId === a.seqId && m.type === 'text',
    `${to.label}: new-message ${JSON.stringify(nm.data)} does not match the sent message (content ${JSON.stringify(content)}, ack ${JSON.stringify(a)}, sender ${from.user.userId})`);
  return { messageId: a.messageId, seqId: a.seqId, ackMs, deliverMs: nm.at - sentAt };
}

// noEcho: the sending socket must never get its own message back as new-message.
async function noEcho(c, messageIds) {
  const own = (await frames(c)).filter((f) => f.type === 'new-message' && f.data && f.data.message && messageIds.includes(f.data.message.messageId));
  check(own.length === 0, `${c.label}: the sending socket got its own message back: ${JSON.stringify(own[0])}`);
}

function routeMissing(r) {
  return r.status === 404 && (!r.body || r.body.code === 'NOT_FOUND');
}

async function main() {
  begin('launch chromium');
  browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: !opts.headed,
    timeout: WAIT_MS,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  summary.browser = browser.version();
  check(pageOrigin !== apiOrigin, `page origin ${pageOrigin} must differ from the API origin ${apiOrigin}`);

  begin('open pages');
  // Two browser contexts: two independent "browsers", one per user.
  const A = await openClient(await browser.newContext(), 'A');
  const B = await openClient(await browser.newContext(), 'B');

  begin('register + login (fetch, CORS)');
  const sfx = rand();
  await registerAndLogin(A, `e2eA_${sfx}`);
  await registerAndLogin(B, `e2eB_${sfx}`);
  summary.users = { A: A.user, B: B.user };

  begin('GET /conversations right after login');
  await conversations(A);
  await conversations(B);

  begin('WebSockets connect');
  await connect(A);
  await connect(B);

  begin('world: A sends, B receives');
  const w1 = await exchange(A, B, 'world', 'world');
  begin('world: B replies, A receives');
  const w2 = await exchange(B, A, 'world', 'world-reply');
  begin('world: no echo to the sending socket');
  await noEcho(A, [w1.messageId]);
  await noEcho(B, [w2.messageId]);
  summary.world = { AtoB: w1, BtoA: w2 };

  if (opts.oneToOne) {
    begin('1:1: A searches B by username');
    const path = '/users/' + encodeURIComponent(B.user.username);
    const s = await call(A, 'GET', path);
    if (routeMissing(s)) fail(`GET /api${path} is not served (route 404: ${describe(s)}); contract.md §3 user search is missing. Run with --one-to-one=false until it lands.`);
    const found = want(A, `GET ${path}`, s, 200);
    check(found && found.userId === B.user.userId && found.username === B.user.username,
      `A: GET ${path} returned ${JSON.stringify(found)}, want userId ${B.user.userId} username ${B.user.username}`);
    // The client searches again with the returned username before adding (contract.md §1).
    const again = await call(A, 'GET', '/users/' + encodeURIComponent(found.username));
    want(A, 'GET /users/{returned username}', again, 200);

    begin('1:1: A adds B as a friend');
    const fr = await call(A, 'POST', '/friends', { friendId: found.userId });
    if (routeMissing(fr)) fail(`POST /api/friends is not served by this gateway (route 404: ${describe(fr)}); the 1:1 part needs contract.md §3 friends. Run with --one-to-one=false until the endpoint lands.`);
    const fd = want(A, 'POST /friends', fr, 201);
    const conv = fd && fd.conversation && fd.conversation.conversationId;
    check(typeof conv === 'string' && /^single_[0-9a-f]{16}$/.test(conv),
      `A: POST /friends returned ${JSON.stringify(fd)}, want data.conversation.conversationId single_<16 hex>`);

    begin('1:1: the conversation exists for both');
    for (const c of [A, B]) {
      const list = await conversations(c);
      const cv = list.find((x) => x.conversationId === conv);
      check(cv && cv.type === 'single', `${c.label}: GET /conversations lacks ${conv} right after POST /friends: ${JSON.stringify(list.map((x) => x.conversationId))}`);
      const other = c === A ? B : A;
      check(cv.target && cv.target.userId === other.user.userId, `${c.label}: ${conv} target ${JSON.stringify(cv.target)}, want the other user ${other.user.userId}`);
    }

    begin('1:1: A sends, B receives');
    const s1 = await exchange(A, B, conv, 'single');
    begin('1:1: B replies, A receives');
    const s2 = await exchange(B, A, conv, 'single-reply');
    begin('1:1: no echo to the sending socket');
    await noEcho(A, [w1.messageId, s1.messageId]);
    await noEcho(B, [w2.messageId, s2.messageId]);
    // Presence is optional here (contract.md §4 friend-online): reported, not asserted.
    const presence = async (c, other) => (await frames(c)).some((f) => f.type === 'friend-online' && f.data && f.data.userId === other.user.userId);
    summary.oneToOneResult = { conversationId: conv, AtoB: s1, BtoA: s2, friendOnlineSeen: { A: await presence(A, B), B: await presence(B, A) } };
  }

  begin('CORS headers');
  for (const c of [A, B]) {
    check(c.badCors.length === 0, `${c.label}: ${c.badCors[0]}`);
    check(c.consoleErrors.length === 0, `${c.label}: console errors: ${c.consoleErrors.join(' | ')}`);
  }
  summary.preflights = { A: A.preflights, B: B.preflights };
  // The JSON + Authorization calls from another origin must have gone through preflights
  // (null: DevTools could not report them; the successful fetches still prove CORS).
  for (const c of [A, B]) check(c.preflights === null || c.preflights > 0, `${c.label}: no CORS preflight was sent: is the page really on another origin than the API?`);

  begin('close');
  for (const c of [A, B]) await withTimeout(c.page.evaluate(() => window.gochat.close()), WAIT_MS, 'ws close');
  await withTimeout(browser.close(), WAIT_MS, 'browser close');
  browser = null;
  summary.ok = true;
  delete summary.step;
  summary.durationMs = Date.now() - t0;
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify(summary) + '\n');
}

main().catch(dumpAndExit);
