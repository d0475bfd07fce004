// The store manager's page: pick a store and a date range, see the discrepancy and cash
// summaries, the session list (sorted by the server), one session's detail, and the registers.
//
// Money arrives as integer minor units per ISO 4217 code ({"SEK": -150} is -1.50 SEK). It is
// never turned into a float: amounts are formatted by string work on the integer and summed as
// BigInt. Everything is local: no framework, no CDN, no build step.

const API = document.querySelector('meta[name="kassad-api"]')?.content || '/api/v1';
const REGISTERS_REFRESH_MS = 15000;

// ---------------------------------------------------------------------------------------------
// Money

// ISO 4217 minor-unit exponents that are not 2 (daemon/ledger/money.py has the full list).
const EXPONENT_0 = 'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF';
const EXPONENT_3 = 'BHD IQD JOD KWD LYD OMR TND';
const EXPONENT_4 = 'CLF UYW';
const EXPONENTS = new Map([
  ...EXPONENT_0.split(' ').map((c) => [c, 0]),
  ...EXPONENT_3.split(' ').map((c) => [c, 3]),
  ...EXPONENT_4.split(' ').map((c) => [c, 4]),
]);

/** Minor-unit digits: what the server said, else ISO 4217; null for a code that is not ISO. */
export function exponentOf(currency) {
  if (serverDigits.has(currency)) return serverDigits.get(currency);
  if (!/^[A-Z]{3}$/.test(currency)) return null;
  return EXPONENTS.get(currency) ?? 2;
}

/** -150 SEK → "-1.50"; 1500 JPY → "1500"; 1234 KWD → "1.234". Exact for any integer; a code
 * that is not ISO 4217 is shown in its minor units as they are. */
export function formatMinor(minor, currency) {
  const digits = exponentOf(currency);
  const n = BigInt(minor); // throws on a non-integer: money is never a float
  const negative = n < 0n;
  let text = (negative ? -n : n).toString();
  if (digits) {
    text = text.padStart(digits + 1, '0');
    text = `${text.slice(0, -digits)}.${text.slice(-digits)}`;
  }
  return (negative ? '-' : '') + text;
}

/** Per-currency totals added up: {SEK: 1} + {SEK: 2, EUR: 3} → {SEK: 3n, EUR: 3n}. */
export function addTotals(...parts) {
  const out = {};
  for (const part of parts) {
    for (const [currency, amount] of Object.entries(part || {})) {
      out[currency] = (out[currency] ?? 0n) + BigInt(amount);
    }
  }
  return out;
}

function negate(totals) {
  return Object.fromEntries(Object.entries(totals || {}).map(([c, a]) => [c, -BigInt(a)]));
}

function isTotals(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) &&
    Object.entries(value).every(([k, v]) => /^[A-Z]{3}$/.test(k) &&
      (Number.isInteger(v) || typeof v === 'bigint'));
}

function currenciesOf(...parts) {
  const found = new Set();
  for (const part of parts) for (const c of Object.keys(part || {})) found.add(c);
  return [...found].sort();
}

// ---------------------------------------------------------------------------------------------
// Reading the API's JSON (daemon/store/http.py, daemon/store/views.py). Every field name the
// page depends on is read here, so a renamed field is a one-line change.

/** Minor-unit digits the server told us, per currency (null: not ISO 4217). */
const serverDigits = new Map();

function learnDigits(json) {
  for (const [currency, digits] of Object.entries(json?.currencies || {})) {
    serverDigits.set(currency, digits);
  }
}

function sessionRef(row) {
  return {
    id: row.session_id,
    register: row.register,
    number: row.number,
    status: row.status,
    openedAt: row.opened_at,
    closedAt: row.closed_at,
    training: row.training === true, // listed, never in a total (the server leaves it out)
  };
}

const read = {
  discrepancies(json) {
    learnDigits(json);
    return {
      truncated: Boolean(json.truncated),
      sessions: (json.sessions || []).map((row) => ({
        // end null: closed without a count (auto-close), unknown rather than zero.
        ...sessionRef(row), start: row.start || {}, end: row.end ?? null, total: row.total || {},
      })),
      start: json.totals?.start || {},
      end: json.totals?.end || {},
      total: json.totals?.total || {},
      training: json.training_sessions ?? 0,
      withoutCount: json.sessions_without_count ?? 0,
    };
  },

  cash(json) {
    learnDigits(json);
    const figures = (f) => ({
      sessions: f?.sessions ?? 0,
      training: f?.training_sessions ?? 0,
      gross: f?.gross || {},
      refunds: f?.refunds || {},
      net: f?.net ?? addTotals(f?.gross, negate(f?.refunds)),
      sales: f?.cash_sales_count ?? 0,
      refundCount: f?.cash_refunds_count ?? 0,
    });
    return {
      truncated: Boolean(json.truncated),
      totals: figures(json.totals),
      registers: (json.registers || []).map((r) => ({ register: r.register, ...figures(r) })),
    };
  },

  sessions(json) {
    learnDigits(json);
    return {
      truncated: Boolean(json.truncated),
      sort: json.sort,
      order: json.order,
      rows: (json.sessions || []).map((row) => ({
        ...sessionRef(row),
        openedBy: row.opened_by,
        closedBy: row.closed_by,
        discrepancy: row.discrepancy || {},
        uncounted: row.status === 'closed' && row.discrepancy_end === null,
      })),
    };
  },

  session(json) {
    learnDigits(json);
    // "details" holds what the register's fold has beyond the named figures (counts by
    // denomination, counter runs, who counted): shown with the rest.
    const { details, ...named } = json;
    return { ...(details || {}), ...named };
  },

  registers(json) {
    return {
      online: json.online,
      offline: json.offline,
      withAlarms: json.with_alarms,
      rows: (json.registers || []).map((row) => ({
        register: row.register,
        online: Boolean(row.online),
        lastSeen: row.last_seen,
        alarms: row.alarms || [],
        devices: row.devices || {},
        recentAlarms: row.recent_alarms || [],
      })),
    };
  },

  alarms(json) {
    return {
      truncated: Boolean(json.truncated),
      rows: (json.alarms || []).map((row) => ({
        ts: row.ts, register: row.register, kind: row.kind, detail: row.detail || {},
      })),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') {
      for (const [key, v] of Object.entries(value)) {
        if (v !== undefined && v !== null) node.dataset[key] = v; // absent, not "null"
      }
    }
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** "-1.50 SEK": the amount and its currency, red when negative. */
function money(minor, currency) {
  const negative = BigInt(minor) < 0n;
  const iso = exponentOf(currency) !== null;
  return el('span', {
    class: negative ? 'money neg' : 'money', dataset: { currency },
    title: iso ? null : `${currency} is not an ISO 4217 code: amount in its minor units`,
  }, el('span', { class: 'amount' }, formatMinor(minor, currency)), ' ',
  el('span', { class: 'cur' }, currency));
}

/** Per-currency totals, one line per currency; `empty` when there are none. */
function totalsCell(totals, empty = '—') {
  const currencies = currenciesOf(totals);
  if (!currencies.length) return el('span', { class: 'none' }, empty);
  return el('span', { class: 'totals' }, currencies.map((c) => money(totals[c], c)));
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** An RFC 3339 time in the browser's (the store's) time zone: 2024-05-01 10:00. */
function time(iso) {
  if (!iso) return el('span', { class: 'none' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return el('span', {}, iso);
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return el('time', { datetime: iso, title: d.toString() }, text);
}

function emptyRow(tbody, columns, text) {
  tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: columns }, text)));
}

function statusBadge(status) {
  const open = status === 'open';
  return el('span', { class: `badge ${open ? 'open' : 'closed'}` }, open ? 'Open' : 'Closed');
}

function trainingBadge(s) {
  return s.training ? el('span', { class: 'badge training', title: 'Training session: '
    + 'shown, never in a total' }, 'Training') : null;
}

/** A close nobody counted (the register's auto-close): its discrepancy at end is unknown. */
function notCounted() {
  return el('span', { class: 'not-counted', title: 'Closed automatically without a count: '
    + 'the discrepancy at close is unknown and not in the totals' }, 'not counted');
}

function sessionLabel(s) {
  return s.number !== undefined && s.number !== null ? `${s.register} #${s.number}` : s.register;
}

const ALARM_LABELS = {
  paper_out: 'Paper out',
  paper_near_end: 'Paper nearly out',
  printer_offline: 'Printer offline',
  printer_error: 'Printer error',
  cover_open: 'Printer cover open',
  drawer_open: 'Drawer left open',
  drawer_offline: 'Drawer not answering',
  chain_broken: 'Event chain broken',
  fork: 'Event stream forked',
  conflict: 'Conflicting event',
  close_mismatch: 'Close figures differ from the events',
  epoch_lost_events: 'Register lost events',
  ledger: 'Event does not fit the session',
  bad_event: 'Unreadable event',
};

// A counter's lasting faults, as the register's state lists them (counter_{fault}:{name}).
const COUNTER_FAULTS = {
  counter_jam: 'jammed',
  counter_stacker_full: 'stacker full',
  counter_stacker_removed: 'stacker removed',
  counter_cashbox_removed: 'cashbox removed',
};

function alarmLabel(code) {
  const [kind, name] = String(code).split(':');
  if (kind === 'counter_offline') return name ? `Counter ${name} offline` : 'Counter offline';
  const fault = COUNTER_FAULTS[kind];
  if (fault) return name ? `Counter ${name}: ${fault}` : `Counter: ${fault}`;
  return ALARM_LABELS[kind] ?? humanize(kind);
}

function humanize(key) {
  const text = String(key).replaceAll('_', ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A narrow window shows each row as a card, so every cell carries its column's name; the
 * roles are explicit because a table laid out as blocks loses them in some browsers. */
function stackable(table) {
  table.classList.add('stack');
  table.setAttribute('role', 'table');
  const heads = [...(table.tHead?.rows[0]?.cells ?? [])].map((th) => th.textContent.trim());
  for (const group of [table.tHead, ...table.tBodies]) group?.setAttribute('role', 'rowgroup');
  for (const row of table.rows) {
    row.setAttribute('role', 'row');
    [...row.cells].forEach((cell, i) => {
      const header = cell.tagName === 'TH';
      const scope = cell.getAttribute('scope');
      cell.setAttribute('role', header ? (scope === 'row' ? 'rowheader' : 'columnheader')
        : 'cell');
      if (row.parentElement !== table.tHead && heads[i] && !row.classList.contains('empty')) {
        cell.dataset.label = heads[i];
      }
    });
  }
  return table;
}

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

function truncatedNote(section, truncated) {
  section.querySelector('.truncated')?.remove();
  if (truncated) {
    section.querySelector('h2, .card-head').after(el('p', { class: 'truncated', role: 'note' },
      'More rows matched than one view holds: narrow the date range.'));
  }
}

// ---------------------------------------------------------------------------------------------
// State: what is shown, mirrored in the address bar so a view can be bookmarked or shared.

const SORTS = ['start', 'end', 'discrepancy'];
const state = { store: '', from: '', to: '', sort: 'start', order: 'desc' };
// The browser's time zone is the store's: the dates of the range are days there.
const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || '';
let generation = 0; // a newer load makes the answers of an older one stale
let sessionsGeneration = 0;
let registersTimer = null;

const $ = (selector) => document.querySelector(selector);

function isoDate(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** "2024-05-01" or an RFC 3339 time → "2024-05-01" (the local date), or "" if neither. */
function dateParam(value) {
  if (!value) return '';
  if (/^\d{4}-\d{2}-\d{2}$/.test(value)) return value;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : isoDate(d);
}

/** Local midnight starting `date` (+ days) as RFC 3339 with the browser's offset. */
function localMidnight(date, days = 0) {
  const [y, m, d] = date.split('-').map(Number);
  const t = new Date(y, m - 1, d + days);
  const offset = -t.getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset);
  return `${isoDate(t)}T00:00:00${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

function readAddress() {
  const params = new URLSearchParams(location.search);
  const today = new Date();
  const weekAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6);
  state.store = (params.get('store') || '').trim();
  state.from = dateParam(params.get('from')) || isoDate(weekAgo);
  state.to = dateParam(params.get('to')) || isoDate(today);
  state.sort = SORTS.includes(params.get('sort')) ? params.get('sort') : 'start';
  state.order = params.get('order') === 'asc' ? 'asc' : 'desc';
}

function writeAddress() {
  const params = new URLSearchParams({
    store: state.store, from: state.from, to: state.to, sort: state.sort, order: state.order,
  });
  history.replaceState(null, '', `${location.pathname}?${params}`);
}

/** The range as the API takes it: whole days (`to` inclusive) in the browser's time zone. */
function rangeParams() {
  if (TIME_ZONE) return { from: state.from, to: state.to, tz: TIME_ZONE };
  return { from: localMidnight(state.from), to: localMidnight(state.to, 1) };
}

function storeUrl(path, params = {}) {
  const query = new URLSearchParams(params).toString();
  return `${API}/stores/${encodeURIComponent(state.store)}${path}${query ? `?${query}` : ''}`;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: 'application/json' } });
  if (!response.ok) {
    let detail = '';
    try {
      const body = await response.json();
      // FastAPI: a text, or a list of {loc, msg} for a bad query parameter.
      detail = Array.isArray(body.detail)
        ? body.detail.map((d) => `${(d.loc || []).slice(-1)[0] ?? ''}: ${d.msg}`).join('; ')
        : String(body.detail ?? '');
    } catch { /* not JSON: the status line says enough */ }
    throw new Error(`${response.status} ${response.statusText}${detail ? ` (${detail})` : ''}`);
  }
  return response.json();
}

function setStatus(text, problem = false) {
  const status = $('#status');
  status.textContent = text;
  status.classList.toggle('problem', problem);
}

// ---------------------------------------------------------------------------------------------
// Loading and rendering the sections

/** Fetch into one section: aria-busy while loading, a message in the section on failure. */
async function loadSection(section, url, render, isCurrent) {
  section.setAttribute('aria-busy', 'true');
  try {
    const json = await getJson(url);
    if (!isCurrent()) return true;
    render(json);
    section.querySelector('.section-error')?.remove();
    return true;
  } catch (error) {
    if (!isCurrent()) return true;
    section.querySelector('.section-error')?.remove();
    section.querySelector('h2, .card-head').after(
      el('p', { class: 'section-error', role: 'alert' }, `Could not load: ${error.message}`));
    return false;
  } finally {
    if (isCurrent()) section.setAttribute('aria-busy', 'false');
  }
}

function rangeText() {
  const span = state.from === state.to ? state.from : `${state.from} to ${state.to}`;
  return TIME_ZONE ? `${span} (${TIME_ZONE})` : span;
}

async function loadAll() {
  const mine = ++generation;
  const current = () => mine === generation;
  writeAddress();
  $('#store-title').textContent = `· ${state.store}`;
  document.title = `Cash sessions · ${state.store} · kassad`;
  $('#main').hidden = false;
  setStatus(`Loading store ${state.store}, ${rangeText()}…`);
  const range = rangeParams();
  const results = await Promise.all([
    loadSection($('#discrepancies'), storeUrl('/discrepancies', range), renderDiscrepancies,
      current),
    loadSection($('#cash'), storeUrl('/cash', range), renderCash, current),
    loadSessions(),
    loadRegisters(),
    loadSection($('#alarms'), storeUrl('/alarms', range), renderAlarms, current),
  ]);
  if (!current()) return;
  const failed = results.filter((ok) => !ok).length;
  setStatus(failed
    ? `Store ${state.store}, ${rangeText()}: ${plural(failed, 'part')} could not be loaded.`
    : `Store ${state.store}, ${rangeText()}.`, failed > 0);
  scheduleRegisters();
}

function renderDiscrepancies(json) {
  const view = read.discrepancies(json);
  truncatedNote($('#discrepancies'), view.truncated);
  const totalsBody = $('#disc-totals tbody');
  const currencies = currenciesOf(view.start, view.end, view.total);
  if (!currencies.length) emptyRow(totalsBody, 4, 'No sessions in this range.');
  else {
    totalsBody.replaceChildren(...currencies.map((c) => el('tr', { dataset: { currency: c } },
      el('th', { scope: 'row' }, c),
      el('td', { class: 'num', dataset: { figure: 'start' } }, money(view.start[c] ?? 0, c)),
      el('td', { class: 'num', dataset: { figure: 'end' } }, money(view.end[c] ?? 0, c)),
      el('td', { class: 'num', dataset: { figure: 'total' } }, money(view.total[c] ?? 0, c)))));
  }
  const left = [];
  if (view.training) left.push(plural(view.training, 'training session'));
  if (view.withoutCount) {
    left.push(`the end of ${plural(view.withoutCount, 'session')} closed without a count`);
  }
  const note = $('#disc-note');
  note.textContent = left.length ? `Not in the totals: ${left.join('; ')}.` : '';
  note.hidden = !left.length;
  const perSession = $('#disc-sessions tbody');
  if (!view.sessions.length) emptyRow(perSession, 5, 'No sessions in this range.');
  else {
    perSession.replaceChildren(...view.sessions.map((s) => el('tr',
      { class: s.training ? 'training' : null,
        dataset: { sessionId: s.id, training: s.training ? 'true' : null } },
      el('th', { scope: 'row' }, sessionLabel(s), s.training ? ' ' : null, trainingBadge(s)),
      el('td', {}, time(s.openedAt)),
      el('td', { class: 'num', dataset: { figure: 'start' } }, totalsCell(s.start)),
      el('td', { class: 'num', dataset: { figure: 'end' } },
        s.status === 'open' ? el('span', { class: 'none' }, 'open')
          : s.end === null ? notCounted() : totalsCell(s.end)),
      el('td', { class: 'num', dataset: { figure: 'total' } }, totalsCell(s.total)))));
  }
  stackable($('#disc-totals'));
  stackable($('#disc-sessions'));
}

function cashRow(label, figures, c, attrs = {}) {
  return el('tr', attrs,
    el('th', { scope: 'row' }, label),
    el('td', { class: 'num', dataset: { figure: 'gross' } }, money(figures.gross[c] ?? 0, c)),
    el('td', { class: 'num', dataset: { figure: 'refunds' } }, money(figures.refunds[c] ?? 0, c)),
    el('td', { class: 'num', dataset: { figure: 'net' } }, money(figures.net[c] ?? 0, c)));
}

function renderCash(json) {
  const view = read.cash(json);
  const t = view.totals;
  truncatedNote($('#cash'), view.truncated);
  const training = t.training ? `; ${plural(t.training, 'training session')} left out` : '';
  $('#cash-counts').textContent = t.sessions || t.training
    ? `${plural(t.sales, 'cash payment')} and ${plural(t.refundCount, 'refund')} in ` +
      `${plural(t.sessions, 'session')}${training}.`
    : '';
  const body = $('#cash-table tbody');
  const currencies = currenciesOf(t.gross, t.refunds, t.net);
  if (!currencies.length) emptyRow(body, 4, 'No cash payments in this range.');
  else {
    body.replaceChildren(...currencies.map((c) => cashRow(c, t, c,
      { dataset: { currency: c } })));
  }
  const perRegister = $('#cash-registers tbody');
  const rows = view.registers.flatMap((r) => currenciesOf(r.gross, r.refunds, r.net)
    .map((c) => cashRow(`${r.register} · ${c}`, r, c,
      { dataset: { register: r.register, currency: c } })));
  if (!rows.length) emptyRow(perRegister, 4, 'No registers in this range.');
  else perRegister.replaceChildren(...rows);
  stackable($('#cash-table'));
  stackable($('#cash-registers'));
}

async function loadSessions() {
  const mine = ++sessionsGeneration;
  const outer = generation;
  const current = () => mine === sessionsGeneration && outer === generation;
  const wanted = { sort: state.sort, order: state.order };
  updateExport();
  return loadSection($('#sessions'), storeUrl('/sessions', { ...rangeParams(), ...wanted }),
    (json) => renderSessions(json, wanted), current);
}

function renderSessions(json, wanted) {
  const view = read.sessions(json);
  const shown = { sort: view.sort ?? wanted.sort, order: view.order ?? wanted.order };
  truncatedNote($('#sessions'), view.truncated);
  const body = $('#sessions-table tbody');
  if (!view.rows.length) emptyRow(body, 5, 'No sessions in this range.');
  else {
    body.replaceChildren(...view.rows.map((s) => el('tr',
      { class: s.training ? 'training' : null,
        dataset: { sessionId: s.id, status: s.status, training: s.training ? 'true' : null } },
      el('td', {}, el('button', {
        type: 'button', class: 'link open-detail', 'aria-haspopup': 'dialog',
        'aria-label': `${time(s.openedAt).textContent}, session ${sessionLabel(s)}: details`,
      }, time(s.openedAt))),
      el('td', {}, s.closedAt ? time(s.closedAt) : el('span', { class: 'none' }, '—')),
      el('td', {}, sessionLabel(s)),
      el('td', {}, statusBadge(s.status), s.training ? ' ' : null, trainingBadge(s)),
      el('td', { class: 'num', dataset: { figure: 'discrepancy' } },
        totalsCell(s.discrepancy), s.uncounted ? notCounted() : null))));
  }
  stackable($('#sessions-table'));
  // The headings say the order only once the rows in that order are on the page.
  for (const th of document.querySelectorAll('#sessions-table th[data-sort]')) {
    const active = th.dataset.sort === shown.sort;
    th.setAttribute('aria-sort', active ? (shown.order === 'asc' ? 'ascending' : 'descending')
      : 'none');
  }
}

function updateExport() {
  // The same filters and order as the list; the server names the file.
  const link = $('#export-csv');
  link.href = storeUrl('/sessions', {
    ...rangeParams(), sort: state.sort, order: state.order, format: 'csv',
  });
  link.removeAttribute('aria-disabled');
}

function onSortClick(event) {
  const th = event.target.closest('th[data-sort]');
  if (!th || !event.target.closest('button')) return;
  const key = th.dataset.sort;
  if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
  else {
    state.sort = key;
    state.order = 'desc'; // newest or largest first
  }
  writeAddress();
  loadSessions();
}

async function loadRegisters() {
  const mine = generation;
  return loadSection($('#registers'), storeUrl('/registers'), renderRegisters,
    () => mine === generation);
}

function scheduleRegisters() {
  clearInterval(registersTimer);
  registersTimer = setInterval(() => {
    if (document.visibilityState === 'visible' && state.store) loadRegisters();
  }, REGISTERS_REFRESH_MS);
}

function deviceSummary(devices) {
  const parts = [];
  for (const [name, device] of Object.entries(devices)) {
    if (!device || typeof device !== 'object') continue;
    if (name === 'counters') {
      for (const [counter, c] of Object.entries(device)) {
        parts.push(`${humanize(counter)}: ${c?.connected === false ? 'offline' : 'connected'}`);
      }
      continue;
    }
    if (device.configured === false) continue;
    const bits = [];
    if (device.connected === false) bits.push('offline');
    else if (device.state) bits.push(humanize(device.state).toLowerCase());
    if (device.paper && device.paper !== 'ok') bits.push(`paper ${humanize(device.paper).toLowerCase()}`);
    parts.push(`${humanize(name)}${bits.length ? `: ${bits.join(', ')}` : ''}`);
  }
  return parts.length ? el('span', { class: 'devices' }, parts.join(' · '))
    : el('span', { class: 'none' }, '—');
}

function renderRegisters(json) {
  const view = read.registers(json);
  $('#registers-counts').textContent = view.rows.length
    ? `${view.online ?? 0} online, ${view.offline ?? 0} offline, ` +
      `${view.withAlarms ?? 0} with device alarms.`
    : '';
  const body = $('#registers-table tbody');
  if (!view.rows.length) emptyRow(body, 5, 'No registers have reported yet.');
  else {
    body.replaceChildren(...view.rows.map((r) => el('tr', { dataset: { register: r.register } },
    el('th', { scope: 'row' }, r.register),
    el('td', {}, el('span', { class: `badge ${r.online ? 'online' : 'offline'}` },
      r.online ? 'Online' : 'Offline')),
    el('td', {}, time(r.lastSeen)),
    el('td', {}, deviceSummary(r.devices)),
    el('td', { class: 'alarm-cell' }, el('div', {},
      r.alarms.length
        ? el('ul', { class: 'tags' }, r.alarms.map((a) => el('li', {
          class: 'badge alarm', dataset: { alarm: a },
        }, alarmLabel(a))))
        : el('span', { class: 'none' }, 'None'),
      r.recentAlarms.length
        ? el('span', { class: 'stored-alarms' },
          `${plural(r.recentAlarms.length, 'stored alarm')}, latest: ` +
          `${alarmLabel(r.recentAlarms[0].kind)}`)
        : null)))));
  }
  stackable($('#registers-table'));
}

function renderAlarms(json) {
  const view = read.alarms(json);
  truncatedNote($('#alarms'), view.truncated);
  const list = $('#alarms-list');
  if (!view.rows.length) {
    list.replaceChildren(el('li', { class: 'none' }, 'No alarms in this range.'));
    return;
  }
  list.replaceChildren(...view.rows.map((a) => {
    const detail = Object.entries(a.detail)
      .filter(([k]) => k !== 'evidence')
      .map(([k, v]) => `${humanize(k)}: ${v !== null && typeof v === 'object' ? JSON.stringify(v) : v}`);
    return el('li', { dataset: { kind: a.kind } },
      el('span', { class: 'badge alarm' }, alarmLabel(a.kind)), ' ',
      a.register ? el('span', { class: 'who' }, a.register) : null, ' ', time(a.ts),
      detail.length ? el('span', { class: 'alarm-detail' }, detail.join('; ')) : null);
  }));
}

// ---------------------------------------------------------------------------------------------
// One session's detail

// Per-currency figures, in the order a cash count is reasoned about; [key, label].
const CASH_FIGURES = [
  ['starting_float', 'Starting float'],
  ['expected_start', 'Left by the previous session'],
  ['discrepancy_at_start', 'Discrepancy at start'],
  ['cash_sales', 'Cash payments'],
  ['cash_refunds', 'Cash refunds'],
  ['adjustments_added', 'Cash added'],
  ['adjustments_removed', 'Cash removed (adjustments)'],
  ['rounding', 'Cash rounding (in the payments)'],
  ['expected_cash', 'Expected cash'],
  ['expected', 'Expected at close'],
  ['counted', 'Counted'],
  ['counter_counted', 'Counted by the counter'],
  ['person_minus_counter', 'Person − counter'],
  ['discrepancy', 'Discrepancy at close'],
  ['left_in_drawer', 'Left in drawer'],
  ['removed', 'Cash removed at close'],
];
const COUNT_FIGURES = [
  ['opening_counts', 'Starting float'],
  ['counts', 'Counted at close'],
  ['left_counts', 'Left in drawer'],
  ['inventory', 'In the drawer (by the movements)'],
];
// A payment type's balance, in the order it adds up; [key, column heading].
const BALANCE_PARTS = [
  ['opening', 'Opening'],
  ['payments', 'Payments'],
  ['deposits', 'Deposits'],
  ['withdrawals', 'Withdrawals'],
  ['balance', 'Balance'],
];
// Figures a system close (auto-close) has none of: nobody counted.
const UNCOUNTED = new Set(['counted', 'discrepancy']);
const DRAWER_CAUSES = {
  sale: 'Sale', refund: 'Refund', adjustment: 'Adjustment', no_sale: 'No sale',
  unexpected: 'Unexpected (no kick)',
};
// Shown in the heading, the overview or a section of their own; everything else the detail
// JSON has is listed under "Other fields".
const SHOWN = new Set([
  'session_id', 'number', 'status', 'store', 'register', 'opened_at', 'closed_at',
  'opened_by', 'closed_by', 'automatic', 'note', 'close_note', 'counted_by', 'total_sales',
  'cash_sales_count', 'cash_refunds_count', 'adjustments', 'payments_by_type', 'payment_counts',
  'drawer_openings', 'counter_runs', 'currencies', 'training', 'balances', 'no_sale_openings',
  'recount_attempts', 'x_printed', 'z_number', 'z_copies', 'system_close', 'approval',
  'recounts', 'corrections', 'reason', 'due_at', 'business_date',
  ...CASH_FIGURES.map(([k]) => k), ...COUNT_FIGURES.map(([k]) => k),
]);

function dl(pairs) {
  return el('dl', { class: 'pairs' }, pairs.filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => el('div', { dataset: { field: k } }, el('dt', {}, humanize(k)),
      el('dd', {}, v))));
}

function part(title, ...content) {
  return el('section', { class: 'detail-part', 'aria-label': title }, el('h3', {}, title),
    ...content);
}

function table(caption, head, rows, numeric = []) {
  return el('div', { class: 'table-wrap', role: 'region', tabindex: 0, 'aria-label': caption },
    stackable(el('table', {},
      el('caption', { class: 'visually-hidden' }, caption),
      el('thead', {}, el('tr', {}, head.map((h, i) => el('th', {
        scope: 'col', class: numeric.includes(i) ? 'num' : null,
      }, h)))),
      el('tbody', {}, rows))));
}

function cashFigures(s) {
  const uncounted = s.system_close === true;
  const present = CASH_FIGURES.filter(([key]) => (isTotals(s[key]) ||
    (uncounted && UNCOUNTED.has(key) && s[key] === null)) &&
    // A closed session's expected cash is its "expected at close".
    !(key === 'expected_cash' && isTotals(s.expected)) &&
    // Rounding only where the register rounds cash.
    !(key === 'rounding' && !currenciesOf(s.rounding).length));
  const currencies = currenciesOf(...present.map(([key]) => s[key]));
  if (!currencies.length) return null;
  const howMany = { cash_sales: s.cash_sales_count, cash_refunds: s.cash_refunds_count };
  const rows = present.map(([key, label]) => {
    const firstSession = key === 'discrepancy_at_start' && s.expected_start === null;
    const unknown = s[key] === null; // a system close: nobody counted
    return el('tr', { dataset: { figure: key } },
      el('th', { scope: 'row' }, label,
        howMany[key] !== undefined ? ` (${howMany[key]})` : '',
        key === 'expected_cash' && s.status === 'open' ? ' now' : '',
        firstSession ? el('span', { class: 'hint' }, ' (first session of the register)') : ''),
      currencies.map((c) => el('td', { class: 'num' },
        firstSession ? el('span', { class: 'none' }, '—')
          : unknown ? notCounted() : money(s[key][c] ?? 0, c))));
  });
  const by = s.counted_by;
  if (by && typeof by === 'object' && Object.keys(by).length) { // "person" or a counter's name
    rows.push(el('tr', { dataset: { figure: 'counted_by' } },
      el('th', { scope: 'row' }, 'Counted by'),
      currencies.map((c) => el('td', { class: 'num' }, String(by[c] ?? '—')))));
  }
  return part('Cash', table('Cash figures per currency', ['', ...currencies], rows,
    currencies.map((_, i) => i + 1)));
}

function adjustments(s) {
  const list = Array.isArray(s.adjustments) ? s.adjustments : [];
  if (!list.length) return part('Adjustments', el('p', { class: 'none' }, 'None.'));
  return part('Adjustments', table('Adjustments', ['Time', 'By', 'Kind', 'Amount', 'Note'],
    list.map((a) => {
      // {direction, currency, amount: minor} (the API) or {amount: {amount, currency}}.
      const nested = a.amount !== null && typeof a.amount === 'object';
      const currency = nested ? a.amount.currency : a.currency;
      const minor = nested ? a.amount.amount : a.amount;
      return el('tr', { dataset: { direction: a.direction } },
        el('td', {}, time(a.ts)),
        el('td', {}, a.employee ?? '—'),
        el('td', {}, a.direction === 'add' ? 'Added' : a.direction === 'remove' ? 'Removed'
          : String(a.direction ?? '—')),
        el('td', { class: 'num' }, currency ? money(minor, currency) : String(minor ?? '—')),
        el('td', {}, a.note ?? ''));
    }), [3]));
}

function payments(s) {
  const byType = s.payments_by_type || {};
  const types = Object.keys(byType).sort((a, b) => (a === 'cash' ? -1 : b === 'cash' ? 1
    : a.localeCompare(b)));
  if (!types.length) return part('Payments by type', el('p', { class: 'none' }, 'None.'));
  const counts = s.payment_counts || {};
  const rows = types.map((t) => el('tr', { dataset: { paymentType: t } },
    el('th', { scope: 'row' }, humanize(t)),
    el('td', { class: 'num' }, counts[t] ?? ''),
    el('td', { class: 'num' }, totalsCell(byType[t]))));
  if (isTotals(s.total_sales)) {
    rows.push(el('tr', { class: 'total', dataset: { paymentType: 'total' } },
      el('th', { scope: 'row' }, 'Total sales'), el('td', {}),
      el('td', { class: 'num' }, totalsCell(s.total_sales))));
  }
  return part('Payments by type', table('Payments by type', ['Type', 'Payments', 'Amount'],
    rows, [1, 2]));
}

function balances(s) {
  const byType = s.balances || {};
  const types = Object.keys(byType).sort((a, b) => (a === 'cash' ? -1 : b === 'cash' ? 1
    : a.localeCompare(b)));
  const rows = types.flatMap((t) => {
    const parts = byType[t] || {};
    return currenciesOf(...BALANCE_PARTS.map(([key]) => parts[key])).map((c) => el('tr',
      { dataset: { balance: t, currency: c } },
      el('th', { scope: 'row' }, humanize(t)),
      BALANCE_PARTS.map(([key]) => el('td', { class: 'num', dataset: { figure: key } },
        money(parts[key]?.[c] ?? 0, c)))));
  });
  if (!rows.length) return null;
  return part('Balances by payment type',
    el('p', { class: 'explain' }, 'Balance = opening + payments + deposits − withdrawals; '
      + 'the cash balance is the expected cash.'),
    table('Balances per payment type and currency',
      ['Type', ...BALANCE_PARTS.map(([, label]) => label)], rows, [1, 2, 3, 4, 5]));
}

function approvalText(a) {
  if (!a || typeof a !== 'object') return undefined;
  const who = a.role ? `${a.employee ?? '—'} (${a.role})` : (a.employee ?? '—');
  return a.reason ? `${who}: ${a.reason}` : who;
}

function corrections(s) {
  const list = Array.isArray(s.corrections) ? s.corrections : [];
  if (!list.length) return null;
  return part('Count corrections', table('Corrections of the count',
    ['Time', 'By', 'Approved by', 'Counted before', 'Counted'],
    list.map((c) => el('tr', {},
      el('td', {}, time(c.ts)),
      el('td', {}, c.employee ?? '—'),
      el('td', {}, approvalText(c.approval) ?? '—'),
      el('td', { class: 'num' }, c.counted_before === null ? notCounted()
        : totalsCell(c.counted_before)),
      el('td', { class: 'num' }, totalsCell(c.counted)))), [3, 4]));
}

function drawerOpenings(s) {
  const openings = s.drawer_openings || {};
  const causes = Object.keys(openings).sort();
  if (!causes.length) return part('Drawer openings', el('p', { class: 'none' }, 'None.'));
  return part('Drawer openings', table('Drawer openings by cause', ['Cause', 'Times'],
    causes.map((c) => el('tr', { class: c === 'unexpected' ? 'warn' : null, dataset: { cause: c } },
      el('th', { scope: 'row' }, DRAWER_CAUSES[c] ?? humanize(c)),
      el('td', { class: 'num' }, openings[c]))), [1]));
}

function denominationCounts(s) {
  const parts = [];
  for (const [key, label] of COUNT_FIGURES) {
    for (const [currency, counts] of Object.entries(s[key] || {})) {
      const values = Object.keys(counts || {}).sort((a, b) => {
        const d = BigInt(a) - BigInt(b);
        return d < 0n ? 1 : d > 0n ? -1 : 0; // largest first
      });
      if (!values.length) continue;
      const total = values.reduce((sum, v) => sum + BigInt(v) * BigInt(counts[v]), 0n);
      parts.push(table(`${label}, ${currency}`, [`${label} (${currency})`, 'Pieces', 'Amount'],
        [...values.map((v) => el('tr', {},
          el('th', { scope: 'row' }, money(v, currency)),
          el('td', { class: 'num' }, counts[v]),
          el('td', { class: 'num' }, money(BigInt(v) * BigInt(counts[v]), currency)))),
        el('tr', { class: 'total' }, el('th', { scope: 'row' }, 'Total'), el('td', {}),
          el('td', { class: 'num' }, money(total, currency)))], [1, 2]));
    }
  }
  const runs = Object.entries(s.counter_runs || {});
  if (runs.length) {
    parts.push(table('Counting runs', ['Currency', 'Device', 'Run', 'Total'],
      runs.map(([currency, run]) => el('tr', {},
        el('th', { scope: 'row' }, currency),
        el('td', {}, run?.device ?? '—'),
        el('td', {}, run?.run_id ?? '—'),
        el('td', { class: 'num' }, run?.total !== undefined ? money(run.total, currency) : '—'))),
      [3]));
  }
  return parts.length ? part('Counts by denomination', ...parts) : null;
}

function otherFields(s) {
  const rest = Object.entries(s).filter(([k, v]) => !SHOWN.has(k) && v !== undefined);
  if (!rest.length) return null;
  return part('Other fields', dl(rest.map(([k, v]) => [k,
    isTotals(v) ? totalsCell(v)
      : v !== null && typeof v === 'object' ? el('code', {}, JSON.stringify(v))
        : String(v)])));
}

function renderDetail(json) {
  const s = read.session(json);
  const ref = sessionRef(s);
  $('#detail-h').textContent = `Register ${ref.register} · session ${ref.number}`;
  if (ref.training) $('#detail-h').append(' ', trainingBadge(ref));
  const closed = ref.status === 'closed';
  const system = closed && s.system_close === true;
  const systemClose = [s.reason === 'auto_close' ? 'automatic close' : s.reason,
    s.due_at ? `due ${time(s.due_at).textContent}` : null,
    s.business_date ? `business day ${s.business_date}` : null].filter(Boolean).join(', ');
  const overview = dl([
    ['status', statusBadge(ref.status)],
    ['training', ref.training ? 'Yes: not in any total' : undefined],
    ['opened', time(ref.openedAt)],
    ['opened_by', s.opened_by ?? '—'],
    ['opened_automatically', s.automatic ? 'Yes' : 'No'],
    ['opening_note', s.note || undefined],
    ['closed', closed ? time(ref.closedAt) : undefined],
    ['closed_by', !closed ? undefined
      : system ? `System${systemClose ? ` (${systemClose})` : ''}, not counted`
        : (s.closed_by ?? '—')],
    ['closing_note', s.close_note || undefined],
    ['approved_by', closed ? approvalText(s.approval) : undefined],
    ['recounts', s.recounts || s.recount_attempts || undefined],
    ['z_report', !closed ? undefined : s.z_number ?? (ref.training ? 'None (training)' : '—')],
    ['x_reports', s.x_printed || undefined],
    ['no_sale_openings', s.no_sale_openings || undefined],
    ['total_sales', isTotals(s.total_sales) ? totalsCell(s.total_sales) : undefined],
    ['session_id', el('code', {}, ref.id)],
  ]);
  const body = $('#detail-body');
  body.replaceChildren(overview, cashFigures(s) ?? '', balances(s) ?? '', corrections(s) ?? '',
    adjustments(s), payments(s), drawerOpenings(s), denominationCounts(s) ?? '',
    otherFields(s) ?? '');
  body.dataset.sessionId = ref.id;
}

async function openDetail(sessionId) {
  const dialog = $('#detail');
  const body = $('#detail-body');
  $('#detail-h').textContent = 'Session';
  body.replaceChildren(el('p', {}, 'Loading…'));
  delete body.dataset.sessionId;
  body.setAttribute('aria-busy', 'true');
  if (!dialog.open) dialog.showModal();
  try {
    renderDetail(await getJson(storeUrl(`/sessions/${encodeURIComponent(sessionId)}`)));
  } catch (error) {
    body.replaceChildren(el('p', { class: 'section-error', role: 'alert' },
      `Could not load the session: ${error.message}`));
  } finally {
    body.setAttribute('aria-busy', 'false');
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function start() {
  readAddress();
  $('#store').value = state.store;
  $('#from').value = state.from;
  $('#to').value = state.to;
  $('#filters').addEventListener('submit', (event) => {
    event.preventDefault();
    const from = $('#from').value;
    const to = $('#to').value;
    if (from > to) {
      setStatus('“From” must not be after “To”.', true);
      $('#from').focus();
      return;
    }
    Object.assign(state, { store: $('#store').value.trim(), from, to });
    loadAll();
  });
  $('#sessions-table thead').addEventListener('click', onSortClick);
  $('#sessions-table tbody').addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-session-id]');
    if (row) openDetail(row.dataset.sessionId);
  });
  $('#detail-close').addEventListener('click', () => $('#detail').close());
  $('#detail').addEventListener('click', (event) => {
    if (event.target === event.currentTarget) event.currentTarget.close(); // the backdrop
  });
  if (state.store) loadAll();
  else {
    setStatus('Enter a store to see its cash sessions.');
    $('#store').focus();
  }
}

start();
