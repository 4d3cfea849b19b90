// warren dashboard: polls the admin JSON API every second and shows it.
//
// Every string from the API is written as text (textContent, attribute
// values), never as HTML: names, reasons and addresses may come from
// peers. The admin token, when the API asks for one, lives in this tab's
// sessionStorage and travels only in the Authorization header.
'use strict';

(() => {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 5000;
  const WINDOW_S = 600; // seconds the charts show
  const TOKEN_KEY = 'warren.admin.token';

  const $ = (id) => document.getElementById(id);

  // el builds an element: attrs are attributes (class, data-*, aria-*),
  // children are nodes or strings (text, never parsed).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };
  // setText changes a node's text only when it differs (no needless DOM
  // churn under a screen reader or a text selection).
  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }
  function setAttr(node, name, value) {
    value = String(value);
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  // ---- formatting ----
  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function bytes(n) {
    n = Number(n) || 0;
    let u = 0;
    while (n >= 1024 && u < UNITS.length - 1) { n /= 1024; u++; }
    return (u === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + '\u00a0' + UNITS[u]; // no break before the unit
  }
  const rate = (n) => bytes(n) + '/s';
  function duration(s) {
    s = Math.max(0, Math.floor(Number(s) || 0));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + sec + 's';
    return sec + 's';
  }
  function ms(seconds) {
    if (!seconds) return '–';
    const v = seconds * 1000;
    return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + '\u00a0ms';
  }
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });
  function routeName(r) {
    if (r.port && r.protocol) return r.protocol + ' port ' + r.port;
    if (r.port) return 'port ' + r.port;
    return r.domain + ' (' + (r.entry || 'http') + ')';
  }

  // ---- state ----
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let status = null;
  const hist = { started: null, seq: 0, samples: [] };
  let lastOK = 0;
  let timer = 0;
  let paused = false; // waiting for a token
  let eventsKey = '';

  class HTTPError extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  // api calls the JSON API. A POST carries a JSON content type, which
  // the admin guard requires of requests a page could send cross-site.
  async function api(path, method = 'GET') {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (method === 'POST') {
      headers['Content-Type'] = 'application/json';
      init.body = '{}';
    }
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    init.signal = ctl.signal;
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new HTTPError(0, e.name === 'AbortError' ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : 'cannot reach the daemon');
    } finally {
      clearTimeout(t);
    }
    const text = await res.text();
    let body = null;
    try { body = JSON.parse(text); } catch (_) { /* a text answer */ }
    if (!res.ok) {
      const msg = (body && body.error) || text.trim() || res.statusText;
      throw new HTTPError(res.status, msg);
    }
    if (body === null) throw new HTTPError(res.status, 'the answer is not JSON');
    return body;
  }

  // ---- connection state and notices ----
  function setConn(kind, text) {
    const c = $('conn');
    c.className = 'conn conn-' + kind;
    setText(c, text);
    $('main').classList.toggle('stale', kind === 'down' && status !== null);
  }
  let noticeTimer = 0;
  let noticeSticky = false; // an error that stays until the API answers again
  function notice(text, kind, sticky) {
    const n = $('notice');
    clearTimeout(noticeTimer);
    noticeSticky = !!(text && sticky);
    if (!text) { n.hidden = true; return; }
    n.className = 'notice ' + (kind || '');
    setText(n, text);
    n.hidden = false;
    if (!sticky) noticeTimer = setTimeout(() => { n.hidden = true; }, 8000);
  }

  // ---- token ----
  function askToken(refused) {
    paused = true;
    notice('');
    $('auth').hidden = false;
    for (const id of ['server-view', 'client-view', 'traffic-section', 'events-section', 'identity']) $(id).hidden = true;
    $('reload').hidden = true;
    setText($('auth-msg'), refused
      ? 'The token was refused (401 Unauthorized). Check it against the admin token of this daemon ([server.admin] or [client.admin] token, token_file or token_env, or $WARREN_ADMIN_TOKEN) and try again.'
      : 'This admin API needs its token (401 Unauthorized). Enter the admin token of this daemon.');
    $('auth-msg').className = refused ? 'bad-text' : '';
    $('auth-msg').setAttribute('role', refused ? 'alert' : 'status');
    setConn('wait', 'Token needed');
    $('token').focus();
  }
  $('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('auth').hidden = true;
    paused = false;
    setConn('wait', 'Connecting…');
    poll();
  });

  // ---- polling ----
  // poll fetches and shows the status and the new history samples, then
  // runs again a second later; one poll runs at a time.
  let busy = false;
  async function poll() {
    clearTimeout(timer);
    if (paused || busy) return;
    busy = true;
    try {
      await pollOnce();
    } finally {
      busy = false;
    }
    if (!paused) timer = setTimeout(poll, POLL_MS);
  }

  async function pollOnce() {
    try {
      const st = await api('api/v1/status');
      let h = await api('api/v1/history?after=' + hist.seq);
      if (h.started !== hist.started) { // first load, or the daemon restarted
        if (hist.seq !== 0) h = await api('api/v1/history?after=0');
        hist.started = h.started;
        hist.samples = [];
        hist.seq = 0;
      }
      for (const s of h.samples) if (s.seq > hist.seq) hist.samples.push(s);
      if (hist.samples.length) hist.seq = hist.samples[hist.samples.length - 1].seq;
      const cut = hist.samples.length - WINDOW_S;
      if (cut > 0) hist.samples.splice(0, cut);
      status = st;
      lastOK = Date.now();
      render();
      setConn('live', 'Live');
      if (noticeSticky) notice('');
    } catch (e) {
      if (e.code === 401) {
        const refused = token !== '';
        token = '';
        sessionStorage.removeItem(TOKEN_KEY);
        askToken(refused);
        return;
      }
      const since = lastOK ? ' since ' + clock(lastOK) : '';
      if (e.code === 0) {
        setConn('down', 'Disconnected' + since);
        notice((status !== null ? 'Disconnected: ' : 'Cannot reach the warren daemon: ') + e.message +
          (status !== null ? '. Showing the last data' + since : '') + '; retrying every second.', 'bad', true);
      } else {
        setConn('down', 'Error ' + e.code);
        notice('The admin API answered ' + e.code + ': ' + e.message, 'bad', true);
      }
    }
  }

  // ---- rendering ----
  function render() {
    const st = status;
    const server = st.role === 'server';
    document.title = 'warren ' + st.role + ' · ' + location.host;
    setText($('role'), st.role);
    const parts = ['version ' + st.version, 'up ' + duration(st.uptime_seconds)];
    parts.push(st.ready ? 'ready' : 'not ready: ' + (st.not_ready || '?'));
    setText($('summary'), parts.join(' · '));
    $('reload').hidden = false;
    $('server-view').hidden = !server;
    $('client-view').hidden = server;
    $('identity').hidden = !server;
    $('traffic-section').hidden = false;
    $('events-section').hidden = false;
    if (server) {
      renderSessions(st);
      renderRoutes(st);
      renderIdentity(st);
    } else {
      renderClient(st);
    }
    renderTraffic(st);
    renderEvents(st);
  }

  // label gives each cell of a table row its column's header as
  // data-label, which the phone layout shows beside the value.
  function label(tr, table) {
    const heads = table.tHead.rows[0].cells;
    for (let i = 0; i < tr.cells.length && i < heads.length; i++) {
      const h = heads[i].textContent.trim();
      if (h && h !== 'Actions') tr.cells[i].dataset.label = h;
    }
    return tr;
  }

  // reconcile keeps parent's children keyed by data-key in items' order:
  // rows are updated in place (a focused button keeps its focus), made
  // when new and removed when gone.
  function reconcile(parent, items, keyOf, make, update) {
    const old = new Map();
    for (const c of parent.children) old.set(c.dataset.key, c);
    let i = 0;
    for (const it of items) {
      const k = keyOf(it);
      let node = old.get(k);
      if (node) old.delete(k);
      else { node = make(it); node.dataset.key = k; }
      update(node, it);
      if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
      i++;
    }
    for (const n of old.values()) n.remove();
  }

  function sessionBytes(s) {
    let i = 0, o = 0;
    for (const v of s.services || []) { i += v.bytes_in; o += v.bytes_out; }
    return [i, o];
  }

  function renderSessions(st) {
    const rows = [];
    for (const c of st.clients || []) {
      if (!c.sessions.length) rows.push({ client: c.name, s: null });
      for (const s of c.sessions) rows.push({ client: c.name, s });
    }
    reconcile($('sessions').tBodies[0], rows, (r) => r.s ? 's:' + r.s.id : 'c:' + r.client, (r) => {
      const tr = el('tr', { 'data-client': r.client, 'data-session': r.s ? r.s.id : '' });
      tr.append(el('th', { scope: 'row' }), el('td'), el('td', { class: 'mono' }), el('td', { class: 'num' }),
        el('td', { class: 'num' }), el('td', { class: 'num' }), el('td', { class: 'num', 'data-field': 'bytes_in' }),
        el('td', { class: 'num', 'data-field': 'bytes_out' }), el('td'));
      if (r.s) {
        const b = el('button', { type: 'button', class: 'small danger', 'data-action': 'disconnect' }, 'Disconnect');
        b.setAttribute('aria-label', 'Disconnect client ' + r.client);
        b.addEventListener('click', () => disconnect(r.client));
        tr.cells[8].append(b);
      }
      return label(tr, $('sessions'));
    }, (tr, r) => {
      const c = tr.cells;
      setText(c[0], r.client);
      if (!r.s) {
        tr.className = 'offline';
        setText(c[1], 'offline');
        for (let i = 2; i < 8; i++) setText(c[i], '');
        return;
      }
      const s = r.s;
      const [bin, bout] = sessionBytes(s);
      setText(c[1], s.transport);
      setText(c[2], s.remote);
      setText(c[3], ms(s.rtt_seconds));
      setText(c[4], duration(s.uptime_seconds));
      setText(c[5], s.streams);
      setText(c[6], bytes(bin));
      setAttr(c[6], 'data-value', bin);
      setText(c[7], bytes(bout));
      setAttr(c[7], 'data-value', bout);
    });
  }

  function renderRoutes(st) {
    const routes = st.routes || [];
    $('routes-empty').hidden = routes.length > 0;
    $('routes').parentElement.hidden = routes.length === 0;
    reconcile($('routes').tBodies[0], routes, routeName, () => {
      const tr = el('tr');
      tr.append(el('th', { scope: 'row' }), el('td'), el('td'));
      return label(tr, $('routes'));
    }, (tr, r) => {
      const c = tr.cells;
      setText(c[0], routeName(r) + (r.shared ? ' · shared' : ''));
      setAttr(tr, 'data-route', routeName(r));
      const by = r.members.map((m) => m.client + ' (' + m.service + ')');
      setText(c[1], by.length ? by.join(', ') : (r.client ? r.client + ' (away)' : '–'));
      let state;
      if (r.members.length) state = r.members.length > 1 ? 'serving, ' + r.members.length + ' sessions' : 'serving';
      else if (r.held_seconds) state = 'held ' + duration(r.held_seconds) + ' more for ' + (r.client || 'its client');
      else state = 'no session';
      if (r.waiting) state += ' · ' + r.waiting + ' waiting';
      if (r.protocol === 'udp') state += ' · ' + (r.flows || 0) + (r.flows === 1 ? ' flow' : ' flows');
      c[2].replaceChildren(el('span', { class: 'badge ' + (r.members.length ? 'ok' : 'warn') }, state));
    });
  }

  function renderIdentity(st) {
    setText($('fp'), st.fingerprint || '');
    $('fp').parentElement.hidden = !st.fingerprint;
    $('no-tls').hidden = !!st.fingerprint;
    reconcile($('listeners'), st.listeners || [], (l) => l.transport + ' ' + l.address, () => el('li'), (li, l) => {
      setText(li, l.transport + ' on ' + l.address);
    });
  }

  // ---- client view ----
  function publicAddress(st, svc) {
    const out = [];
    const proto = svc.protocol ? '/' + svc.protocol : '';
    if (svc.remote_port && (st.servers || []).length > 1) {
      out.push('port ' + svc.remote_port + proto + ' of each server');
    } else if (svc.remote_port) {
      let host = st.server || '';
      const m = /^(?:[a-z]+:\/\/)?(?:\[([^\]]+)\]|([^:]+)):\d+$/.exec(host);
      if (m) host = m[1] ? '[' + m[1] + ']' : m[2];
      out.push(host + ':' + svc.remote_port + proto);
    }
    for (const d of svc.domains || []) out.push(d);
    return out.join(', ') || '–';
  }

  // renderServers fills the servers table: a row per session of each
  // server, one for a server without a session.
  function renderServers(st) {
    const rows = [];
    for (const v of st.servers || []) {
      if (!v.sessions.length) rows.push({ v, s: null });
      for (const s of v.sessions) rows.push({ v, s });
    }
    reconcile($('servers').tBodies[0], rows, (r) => r.v.server + '/' + (r.s ? r.s.id : ''), (r) => {
      const tr = el('tr', { 'data-server': r.v.server, 'data-session': r.s ? r.s.id : '' });
      tr.append(el('th', { scope: 'row', class: 'mono' }), el('td', { 'data-field': 'state' }), el('td', { class: 'mono' }), el('td', { class: 'mono' }),
        el('td', { class: 'num' }), el('td', { class: 'num' }), el('td', { class: 'num' }), el('td'));
      return label(tr, $('servers'));
    }, (tr, r) => {
      const c = tr.cells, s = r.s;
      setText(c[0], r.v.server);
      setText(c[1], r.v.state);
      setAttr(tr, 'data-state', r.v.state);
      setText(c[2], s ? s.remote : (r.v.address || '–'));
      setText(c[3], s ? s.id : '–');
      setText(c[4], s ? ms(s.rtt_seconds) : '–');
      setText(c[5], s ? duration(s.uptime_seconds) : '–');
      setText(c[6], s ? String(s.streams) : '–');
      setText(c[7], r.v.last_error || '');
    });
  }

  function renderClient(st) {
    renderServers(st);
    const s = st.session;
    const servers = st.servers || [];
    const serving = servers.filter((v) => v.state === 'up').length;
    const facts = servers.length > 1
      ? [['Servers', serving + ' of ' + servers.length + ' serving'], ['Transport', st.transport]]
      : [['Server', st.server], ['Transport', st.transport]];
    if (s) {
      facts.push(['State', 'connected as ' + s.client], ['Session', s.id], ['Remote', s.remote],
        ['Up for', duration(s.uptime_seconds)], ['RTT', ms(s.rtt_seconds)], ['Streams', String(s.streams)]);
      if (st.connections) facts.push(['Connections', st.connections + ' up']);
    } else {
      facts.push(['State', 'not connected']);
    }
    if (st.last_error) facts.push(['Last error', st.last_error]);
    const dl = $('session');
    reconcile(dl, facts.flatMap((f) => [['dt', f[0], f[0]], ['dd', f[0], f[1]]]), (f) => f[0] + ':' + f[1], (f) => el(f[0]), (n, f) => setText(n, f[2]));
    // RTT chart: this client's round trips, a line per session (one per
    // server and connection).
    const ids = new Set();
    for (const x of hist.samples) for (const y of x.rtt || []) ids.add(y.session);
    const lines = [...ids].slice(0, 16).map((id) => ({
      cls: 'rtt',
      pts: hist.samples.map((x) => {
        const r = (x.rtt || []).find((y) => y.session === id);
        return { seq: x.seq, v: r ? r.rtt_seconds : 0 };
      }),
    }));
    const peak = drawChart($('rtt-chart'), lines.length ? lines : [{ cls: 'rtt', pts: [] }]);
    setText($('rtt-span'), spanText());
    setText($('rtt-now'), s ? '(now ' + ms(s.rtt_seconds) + ', peak ' + ms(peak) + ')' : '');
    setAttr($('rtt-chart'), 'aria-label', 'Round trip, ' + spanText() + ': now ' + (s ? ms(s.rtt_seconds) : 'no session') + ', peak ' + ms(peak));
    const svcs = s ? s.services : [];
    reconcile($('services').tBodies[0], svcs, (v) => v.name, (v) => {
      const tr = el('tr', { 'data-service': v.name });
      tr.append(el('th', { scope: 'row' }), el('td', { class: 'mono' }), el('td', { class: 'mono' }), el('td', { class: 'num' }),
        el('td', { class: 'num', 'data-field': 'bytes_in' }), el('td', { class: 'num', 'data-field': 'bytes_out' }));
      return label(tr, $('services'));
    }, (tr, v) => {
      const c = tr.cells;
      setText(c[0], v.name);
      setText(c[1], publicAddress(st, v));
      setText(c[2], v.target || '');
      setText(c[3], v.protocol === 'udp' ? (v.flows || 0) + (v.flows === 1 ? ' flow' : ' flows') : v.connections);
      setText(c[4], bytes(v.bytes_in));
      setAttr(c[4], 'data-value', v.bytes_in);
      setText(c[5], bytes(v.bytes_out));
      setAttr(c[5], 'data-value', v.bytes_out);
    });
  }

  // ---- traffic ----
  function renderTraffic(st) {
    // Every service a session serves now, then any still in the history.
    const series = new Map();
    const add = (client, service, svc) => {
      const k = client + '/' + service;
      const e = series.get(k) || { client, service, total: [0, 0], conns: 0, live: false };
      if (svc) { e.total[0] += svc.bytes_in; e.total[1] += svc.bytes_out; e.conns += svc.connections; e.live = true; }
      series.set(k, e);
    };
    if (st.role === 'server') {
      for (const c of st.clients || []) for (const s of c.sessions) for (const v of s.services) add(c.name, v.name, v);
    } else if (st.session) {
      for (const v of st.session.services) add(st.session.client, v.name, v);
    }
    for (const x of hist.samples) for (const r of x.traffic) add(r.client || '', r.service, null);
    const list = [...series.values()].sort((a, b) => (b.live - a.live) || a.client.localeCompare(b.client) || a.service.localeCompare(b.service));
    $('traffic-empty').hidden = list.length > 0;
    setText($('traffic-span'), spanText());
    reconcile($('traffic'), list, (e) => e.client + '/' + e.service, (e) => {
      const card = el('article', { class: 'card', 'data-series': e.client + '/' + e.service });
      const svg = svgEl('svg', { class: 'chart', viewBox: '0 0 600 60', preserveAspectRatio: 'none', role: 'img' });
      card.append(el('h3'), el('p', { class: 'rates' }, el('span', { class: 'key key-in' }), el('span', { class: 'key key-out' }), el('span', { class: 'muted' })), svg);
      return card;
    }, (card, e) => {
      setText(card.querySelector('h3'), e.service + (st.role === 'server' && e.client ? ' · ' + e.client : '') + (e.live ? '' : ' (gone)'));
      const pick = (x, i) => {
        const r = x.traffic.find((y) => (y.client || '') === e.client && y.service === e.service);
        return r ? (i ? r.out : r.in) : 0;
      };
      const pin = hist.samples.map((x) => ({ seq: x.seq, v: pick(x, 0) }));
      const pout = hist.samples.map((x) => ({ seq: x.seq, v: pick(x, 1) }));
      const svg = card.querySelector('svg');
      const peak = drawChart(svg, [{ cls: 'in', pts: pin }, { cls: 'out', pts: pout }]);
      const nin = pin.length ? pin[pin.length - 1].v : 0, nout = pout.length ? pout[pout.length - 1].v : 0;
      const [kin, kout, more] = card.querySelector('.rates').children;
      setText(kin, 'in ' + rate(nin));
      setText(kout, 'out ' + rate(nout));
      const bits = [];
      if (e.live) bits.push('total ' + bytes(e.total[0] + e.total[1]), e.conns + ' open');
      if (peak > 0) bits.push('peak\u00a0' + rate(peak));
      setText(more, bits.join(' · '));
      setAttr(svg, 'aria-label', e.service + ': now ' + rate(nin) + ' in, ' + rate(nout) + ' out; peak ' + rate(peak) + ' over the ' + spanText());
    });
  }

  // span is how many seconds the charts show: the history there is, at
  // least a minute, at most WINDOW_S.
  function span() {
    const have = hist.samples.length ? hist.seq - hist.samples[0].seq + 1 : 0;
    return Math.min(WINDOW_S, Math.max(60, have));
  }
  function spanText() {
    const m = Math.round(span() / 60);
    return 'last ' + (m === 1 ? 'minute' : m + ' minutes');
  }

  // drawChart draws lines of {seq, v} points on a 600×60 box whose right
  // edge is the newest sample; it returns the peak, also kept in data-peak.
  function drawChart(svg, lines) {
    const last = hist.seq, width = span();
    let peak = 0;
    for (const l of lines) for (const p of l.pts) if (last - p.seq < width) peak = Math.max(peak, p.v);
    const top = peak > 0 ? peak * 1.1 : 1;
    const polys = lines.map((l) => {
      const pts = l.pts.filter((p) => last - p.seq < width)
        .map((p) => (600 - (last - p.seq) * 600 / (width - 1)).toFixed(1) + ',' + (58 - p.v / top * 56).toFixed(1));
      return svgEl('polyline', { class: l.cls, points: pts.join(' ') });
    });
    svg.replaceChildren(...polys);
    setAttr(svg, 'data-peak', peak);
    return peak;
  }

  // ---- events ----
  const EVENT_LABEL = {
    session_up: ['session up', 'ok'],
    session_down: ['session down', 'warn'],
    rejected: ['rejected', 'bad'],
    handshake_failed: ['handshake failed', 'bad'],
    update_rejected: ['update rejected', 'bad'],
    connection_refused: ['connection refused', 'warn'],
    unknown_host: ['unknown host', 'warn'],
    connect_failed: ['connect failed', 'bad'],
    target_failed: ['target unreachable', 'bad'],
    reload: ['reload', ''],
  };
  function renderEvents(st) {
    const evs = (st.events || []).slice().reverse();
    const key = JSON.stringify(evs);
    if (key === eventsKey) return;
    eventsKey = key;
    $('events-empty').hidden = evs.length > 0;
    $('events').parentElement.hidden = evs.length === 0;
    const rows = evs.map((e) => {
      const [name, cls] = Object.hasOwn(EVENT_LABEL, e.kind) ? EVENT_LABEL[e.kind] : [e.kind, ''];
      let badgeCls = cls;
      if (e.kind === 'reload') badgeCls = e.code === 'ok' ? 'ok' : 'bad';
      const detail = el('td', { class: 'reason' });
      const bits = [];
      if (e.route) bits.push(e.route);
      if (e.remote) bits.push('from ' + e.remote);
      if (e.code && e.kind !== 'reload') bits.push(e.code);
      if (bits.length) detail.append(el('span', { class: 'muted' }, bits.join(' · ')), e.reason ? ': ' : '');
      if (e.reason) detail.append(e.reason);
      const when = el('td', { class: 'num' }, el('time', { datetime: e.time }, clock(e.time)));
      if (e.count > 1) when.append(' ', el('span', { class: 'count', title: e.count + ' times; the last shown' }, '×' + e.count));
      return label(el('tr', { 'data-kind': e.kind }, when, el('td', {}, el('span', { class: 'badge ' + badgeCls }, name)), el('td', {}, e.client || ''), detail), $('events'));
    });
    $('events').tBodies[0].replaceChildren(...rows);
  }

  // ---- actions ----
  function confirmAction(title, message, okLabel) {
    const d = $('confirm');
    setText($('confirm-h'), title);
    setText($('confirm-msg'), message);
    setText($('confirm-ok'), okLabel);
    return new Promise((resolve) => {
      const done = (v) => {
        $('confirm-ok').onclick = $('confirm-cancel').onclick = d.oncancel = null;
        d.close();
        resolve(v);
      };
      $('confirm-ok').onclick = () => done(true);
      $('confirm-cancel').onclick = () => done(false);
      d.oncancel = (ev) => { ev.preventDefault(); done(false); };
      d.showModal();
    });
  }

  async function disconnect(name) {
    const ok = await confirmAction('Disconnect ' + name + '?',
      'Every session of client "' + name + '" is closed. It reconnects unless its configuration changed; its routes are held for it meanwhile (reconnect_grace).',
      'Disconnect');
    if (!ok) return;
    try {
      await api('api/v1/clients/' + encodeURIComponent(name) + '/disconnect', 'POST');
      notice('Client "' + name + '" disconnected.', 'ok');
    } catch (e) {
      if (e.code === 401) { askToken(true); return; }
      notice('Disconnect failed: ' + e.message, 'bad');
    }
    poll();
  }

  $('reload').addEventListener('click', async () => {
    const ok = await confirmAction('Reload the configuration?',
      'The daemon reads its config file again and applies it, as on SIGHUP. An invalid file is refused and the running configuration stays.',
      'Reload');
    if (!ok) return;
    try {
      await api('api/v1/reload', 'POST');
      notice('Configuration reloaded.', 'ok');
    } catch (e) {
      if (e.code === 401) { askToken(true); return; }
      notice('Reload refused: ' + e.message, 'bad');
    }
    poll();
  });

  $('copy-fp').addEventListener('click', async () => {
    const fp = $('fp').textContent;
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(fp);
        copied = true;
      }
    } catch (_) { /* fall back below */ }
    if (!copied) { // plain http beyond loopback: no clipboard API
      const r = document.createRange();
      r.selectNodeContents($('fp'));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      copied = document.execCommand && document.execCommand('copy');
    }
    setText($('copy-state'), copied ? 'Copied.' : 'Selected: press Ctrl+C to copy.');
    setTimeout(() => setText($('copy-state'), ''), 3000);
  });

  document.addEventListener('visibilitychange', () => { if (!document.hidden && !paused) poll(); });
  poll();
})();
