// k6 as a peer of the load engine: the same open-loop throughput workload against apex-mock.
//
//   k6 run --quiet -e URL=ws://127.0.0.1:PORT/ws -e RATE=2000 -e SECONDS=2 -e CONNECTIONS=1 \
//          -e RUN_ID=k1 -e SUMMARY=/tmp/k6.json benchmarks/k6_load.js
//
// Environment (__ENV):
//   URL          the mock's WebSocket endpoint (ws://HOST:PORT/ws)                   required
//   MODE         "load" (default): the rate workload; "open": open CONNECTIONS, hold them
//                HOLD_S seconds, close (the connection-opening measurement)
//   RATE         offered rate, messages per second, all connections together        default 1000
//   SECONDS      length of the schedule                                              default 2
//   CONNECTIONS  C connections; message k goes to connection k mod C                default 1
//   VUS          virtual users sharing the connections (must divide C; else 1)       default 1
//   RUN_ID       prefix of every message_id, and of the bearer tokens                 default "k6"
//   DRAIN_S      how long after the last send the replies are waited for              default 2
//   CONCURRENCY  handshakes in flight at once while opening (the engine's default)    default 100
//   HOLD_S       MODE=open: how long the connections stay open                        default 2
//   SUMMARY      path of the JSON summary (handleSummary)                             default k6-summary.json
//
// The schedule is the engine's: message k is due at start + k / RATE (start fixed once every
// connection of the VU is open), frames {"type":"throughput_test","message_id":
// "<run>-<conn>-<seq>","sequence_id":seq}, seq the connection's own count. Each reply
// (throughput_response, same message_id) is matched through a Map message_id -> intended send
// time; latency runs from the intended send time (not the actual one), so a sender that falls
// behind shows it in the latency (no coordinated omission).
//
// How faithfully it keeps the schedule: k6 runs one JavaScript event loop per VU, and a JS
// timer fires no finer than 1 ms (Date.now() is the only clock: whole milliseconds). So the
// sender wakes on a timer, sends every message already due (yielding every 64 sends when it is
// behind, like the engine), and sleeps until the next one is due, never under 1 ms. At high
// rates messages therefore leave in small bursts of up to rate/1000 per wake-up; and a reply
// is timed only when the VU's loop gets to it (a busy sender delays it: that delay is counted,
// as it should). Latencies are whole milliseconds (Date.now()), so p99 is known to +-1 ms.
// Late sends (> 10 ms after the intended time) are counted in apex_late_sends.

import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';

const URL = __ENV.URL;
const MODE = __ENV.MODE || 'load';
const RATE = Number(__ENV.RATE || 1000);
const SECONDS = Number(__ENV.SECONDS || 2);
const CONNECTIONS = Math.max(1, Number(__ENV.CONNECTIONS || 1));
const REQUESTED_VUS = Math.max(1, Number(__ENV.VUS || 1));
const VUS = CONNECTIONS % REQUESTED_VUS === 0 ? REQUESTED_VUS : 1;
const RUN_ID = __ENV.RUN_ID || 'k6';
const DRAIN_MS = Number(__ENV.DRAIN_S || 2) * 1000;
const CONCURRENCY = Math.max(1, Number(__ENV.CONCURRENCY || 100));
const HOLD_MS = Number(__ENV.HOLD_S || 2) * 1000;
const SUMMARY = __ENV.SUMMARY || 'k6-summary.json';
const TOTAL = Math.round(RATE * SECONDS);
const INTERVAL_MS = 1000 / RATE;
const LATE_MS = 10;
const YIELD_EVERY = 64;

const latency = new Trend('apex_latency', true);
const scheduled = new Counter('apex_scheduled');
const sent = new Counter('apex_sent');
const answered = new Counter('apex_answered');
const lost = new Counter('apex_lost');
const duplicates = new Counter('apex_duplicates');
const lateSends = new Counter('apex_late_sends');
const connectFailures = new Counter('apex_connect_failures');
const opened = new Counter('apex_opened');
const openMs = new Trend('apex_open_ms', true);

export const options = {
  scenarios: {
    apex: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(SECONDS + DRAIN_MS / 1000 + HOLD_MS / 1000 + 120)}s`,
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)', 'count'],
  noConnectionReuse: true,
};

// Open this VU's connections, at most CONCURRENCY handshakes at once; then call ready(sockets).
function openAll(mine, ready) {
  const sockets = new Array(mine.length);
  let next = 0;
  let settled = 0;
  const openOne = () => {
    if (next >= mine.length) return;
    const slot = next++;
    const conn = mine[slot];
    const ws = new WebSocket(URL, null, { headers: { Authorization: `Bearer ${RUN_ID}-${conn}` } });
    let done = false;
    const settle = (ok) => {
      if (done) return;
      done = true;
      if (!ok) connectFailures.add(1);
      settled++;
      openOne();
      if (settled === mine.length) ready(sockets);
    };
    ws.onopen = () => {
      sockets[slot] = ws;
      opened.add(1);
      settle(true);
    };
    ws.onerror = () => settle(false);
    ws.onclose = () => settle(false);
  };
  for (let i = 0; i < Math.min(CONCURRENCY, mine.length); i++) openOne();
}

function closeAll(sockets) {
  for (const ws of sockets) {
    if (ws) {
      try {
        ws.close();
      } catch (e) {
        // already closed
      }
    }
  }
}

function openMode(mine) {
  const began = Date.now();
  console.log(`APEX-K6 opening ${mine.length}`);
  openAll(mine, (sockets) => {
    openMs.add(Date.now() - began);
    console.log(`APEX-K6 opened ${sockets.filter((s) => s).length} in ${Date.now() - began} ms`);
    setTimeout(() => {
      console.log('APEX-K6 closing');
      closeAll(sockets);
    }, HOLD_MS);
  });
}

function loadMode(vu, mine) {
  // This VU sends messages k = vu, vu + VUS, ...: with VUS dividing CONNECTIONS, k mod C is
  // one of its own connections.
  const prefix = `${RUN_ID}-`;
  const mineTotal = TOTAL > vu ? Math.ceil((TOTAL - vu) / VUS) : 0;
  scheduled.add(mineTotal);
  openAll(mine, (sockets) => {
    const byConn = {};
    mine.forEach((conn, slot) => {
      byConn[conn] = sockets[slot];
    });
    const pending = new Map(); // message_id -> intended send time (ms)
    const seen = new Uint8Array(TOTAL);
    let answeredHere = 0;
    let finished = false;
    let drainTimer = null;
    const start = Date.now() + 20;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (drainTimer !== null) clearTimeout(drainTimer); // a pending timer would keep the VU alive
      lost.add(mineTotal - answeredHere);
      console.log(`APEX-K6 done ${answeredHere}/${mineTotal}`);
      closeAll(sockets);
    };
    const onMessage = (event) => {
      const now = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      const id = frame.message_id;
      if (typeof id !== 'string' || !id.startsWith(prefix)) return; // e.g. session_started
      const dash = id.lastIndexOf('-');
      const rest = id.substring(prefix.length, dash);
      const k = Number(id.substring(dash + 1)) * CONNECTIONS + Number(rest);
      if (seen[k]) {
        duplicates.add(1);
        return;
      }
      const intended = pending.get(id);
      if (intended === undefined) return; // not ours
      pending.delete(id);
      seen[k] = 1;
      latency.add(now - intended);
      answered.add(1);
      answeredHere++;
      if (answeredHere === mineTotal) finish();
    };
    mine.forEach((conn, slot) => {
      if (sockets[slot]) sockets[slot].onmessage = onMessage;
    });
    let k = vu;
    const tick = () => {
      let burst = 0;
      while (k < TOTAL) {
        const due = start + k * INTERVAL_MS;
        const now = Date.now();
        if (due > now) {
          setTimeout(tick, Math.max(1, due - now)); // never under 1 ms, like the engine
          return;
        }
        if (now - due > LATE_MS) lateSends.add(1);
        const conn = k % CONNECTIONS;
        const seq = Math.floor(k / CONNECTIONS);
        const ws = byConn[conn];
        const id = `${prefix}${conn}-${seq}`;
        if (ws && ws.readyState === 1) {
          pending.set(id, due);
          ws.send(JSON.stringify({ type: 'throughput_test', message_id: id, sequence_id: seq }));
          sent.add(1);
        }
        k += VUS;
        if (++burst >= YIELD_EVERY) {
          setTimeout(tick, 0); // behind: let the replies in
          return;
        }
      }
      if (answeredHere === mineTotal) finish();
      else drainTimer = setTimeout(finish, DRAIN_MS);
    };
    if (mineTotal === 0) finish();
    else setTimeout(tick, Math.max(0, start - Date.now()));
  });
}

export default function () {
  const vu = exec.vu.idInTest - 1;
  const mine = [];
  for (let c = vu; c < CONNECTIONS; c += VUS) mine.push(c);
  if (MODE === 'open') openMode(mine);
  else loadMode(vu, mine);
}

function figure(metric, stat) {
  return metric && metric.values && metric.values[stat] !== undefined ? metric.values[stat] : null;
}

export function handleSummary(data) {
  const m = data.metrics;
  const out = {
    mode: MODE,
    rate: RATE,
    seconds: SECONDS,
    connections: CONNECTIONS,
    vus: VUS,
    scheduled: figure(m.apex_scheduled, 'count') || 0,
    sent: figure(m.apex_sent, 'count') || 0,
    answered: figure(m.apex_answered, 'count') || 0,
    lost: figure(m.apex_lost, 'count') || 0,
    duplicated: figure(m.apex_duplicates, 'count') || 0,
    missed_sends: figure(m.apex_late_sends, 'count') || 0,
    connect_failures: figure(m.apex_connect_failures, 'count') || 0,
    opened: figure(m.apex_opened, 'count') || 0,
    open_ms: figure(m.apex_open_ms, 'max'),
    p50_ms: figure(m.apex_latency, 'med'),
    p99_ms: figure(m.apex_latency, 'p(99)'),
    max_ms: figure(m.apex_latency, 'max'),
  };
  return { [SUMMARY]: JSON.stringify(out) };
}
