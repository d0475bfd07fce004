// Issue 9: the store's safes and cash transfers on the store page. Self-contained: it reads
// the store from the page's form and address, and reloads when the page's form is submitted.

const API = document.querySelector('meta[name="kassad-api"]')?.content || '/api/v1';
const EXPONENT_0 = new Set('BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF'
  .split(' '));
const EXPONENT_3 = new Set('BHD IQD JOD KWD LYD OMR TND'.split(' '));
const $ = (selector) => document.querySelector(selector);
const view = { store: '', status: 'unreconciled' };

function digits(currency) {
  if (EXPONENT_0.has(currency)) return 0;
  return EXPONENT_3.has(currency) ? 3 : 2;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function formatMinor(minor, currency) {
  const n = digits(currency);
  const negative = minor < 0;
  const text = String(Math.abs(minor)).padStart(n + 1, '0');
  const whole = n ? text.slice(0, -n) : text;
  return `${negative ? '-' : ''}${whole}${n ? `.${text.slice(-n)}` : ''}`;
}

/** "12.50" in SEK → 1250; null when it is not an amount. */
function toMinor(text, currency) {
  const match = /^(\d+)(?:[.,](\d+))?$/.exec(text.trim());
  const n = digits(currency);
  if (!match || (match[2] || '').length > n) return null;
  return Number(match[1]) * 10 ** n + Number((match[2] || '').padEnd(n, '0') || 0);
}

function amounts(totals) {
  const currencies = Object.keys(totals || {}).sort();
  if (!currencies.length) return el('span', { class: 'none' }, '—');
  return el('span', { class: 'totals' }, currencies.map((c) => el('span', {
    class: totals[c] < 0 ? 'money neg' : 'money',
  }, el('span', { class: 'amount' }, formatMinor(totals[c], c)), ' ',
  el('span', { class: 'cur' }, c))));
}

function storeUrl(path, params = {}) {
  const query = new URLSearchParams(params).toString();
  return `${API}/stores/${encodeURIComponent(view.store)}${path}${query ? `?${query}` : ''}`;
}

async function call(url, body) {
  const response = await fetch(url, body === undefined
    ? { headers: { Accept: 'application/json' } }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body) });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(json.detail)
      ? json.detail.map((d) => `${(d.loc || []).slice(-1)[0] ?? ''}: ${d.msg}`).join('; ')
      : String(json.detail ?? response.statusText);
    throw new Error(detail);
  }
  return json;
}

function say(text, problem = false) {
  const status = $('#safes-status');
  status.textContent = text;
  status.classList.toggle('problem', problem);
}

function renderSafes(json) {
  const tbody = $('#safes-table tbody');
  const select = $('#safe-id');
  const chosen = select.value;
  select.replaceChildren(...json.safes.map((s) => el('option', { value: s.safe }, s.name)));
  if (chosen) select.value = chosen;
  if (!json.safes.length) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 7 },
      'No safes configured for this store.')));
    return;
  }
  tbody.replaceChildren(...json.safes.map((s) => el('tr', { 'data-safe': s.safe },
    el('th', { scope: 'row' }, s.name, s.declared ? null : el('span', { class: 'none' },
      ' (no start amount)')),
    ...['start', 'receipts', 'floats_issued', 'bank_deposits', 'expected'].map((k) =>
      el('td', { class: 'num' }, amounts(s[k]))),
    el('td', { class: 'num' }, s.last_count ? amounts(s.last_count.discrepancy) : '—'))));
}

const STEP_LABELS = {
  'safe.declare_start': 'Start amount', 'safe.receipt': 'Receipt',
  'safe.float_issued': 'Float issued', 'safe.bank_deposit': 'Bank deposit',
  'safe.count': 'Count',
};

function renderLedger(json) {
  const tbody = $('#ledger-table tbody');
  if (!json.ledger.length) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 5 },
      'Nothing recorded yet.')));
    return;
  }
  tbody.replaceChildren(...json.ledger.map((step) => {
    const d = step.data;
    const details = [d.register && `register ${d.register}`, d.transfer_id,
      d.of_transfer && `names ${d.of_transfer}`, d.bag && `bag ${d.bag}`,
      d.discrepancy && `discrepancy ${Object.entries(d.discrepancy)
        .map(([c, v]) => `${formatMinor(v, c)} ${c}`).join(', ') || '0'}`, d.note]
      .filter(Boolean).join(' · ');
    return el('tr', { 'data-kind': step.kind }, el('td', {}, step.ts),
      el('td', {}, STEP_LABELS[step.kind] || step.kind),
      el('td', { class: 'num' }, amounts(d.amounts || d.counted)),
      el('td', {}, step.employee || ''), el('td', {}, details));
  }));
}

function party(t) {
  const side = (kind, id) => (kind === 'external' ? 'outside the store (start amount)'
    : `${kind === 'safe' ? 'safe ' : ''}${id}`);
  const me = side(t.side, t.owner);
  const other = side(t.party.kind, t.party.id);
  return t.direction === 'out' ? `${me} → ${other}` : `${other} → ${me}`;
}

function renderTransfers(json) {
  const tbody = $('#transfers-table tbody');
  if (!json.transfers.length) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 9 },
      view.status === 'unreconciled' ? 'No open transfers.' : 'No transfers.')));
    return;
  }
  tbody.replaceChildren(...json.transfers.map((t) => el('tr', {
    'data-transfer-id': t.transfer_id, 'data-status': t.status,
  },
  el('td', {}, el('input', { type: 'checkbox', value: t.transfer_id,
    'aria-label': `Select ${t.transfer_id}` })),
  el('td', {}, t.transfer_id, t.of_transfer ? el('span', { class: 'none' },
    ` (names ${t.of_transfer})`) : null),
  el('td', {}, party(t)),
  el('td', { class: 'num' }, amounts(t.amounts)),
  el('td', {}, t.ts),
  el('td', {}, el('span', { class: `badge ${t.status === 'reconciled' ? 'closed' : 'open'}` },
    t.status === 'reconciled' ? 'Reconciled' : 'Open')),
  el('td', {}, t.counterpart || '—'),
  el('td', {}, t.by ? `${t.by.employee || ''} (${t.by.role})` : '—'),
  el('td', {}, t.reason || ''))));
}

async function load() {
  if (!view.store) return;
  $('#safes').setAttribute('aria-busy', 'true');
  $('#transfers-csv').href = storeUrl('/transfers', { status: view.status, format: 'csv' });
  try {
    renderSafes(await call(storeUrl('/safes')));
    if ($('#safe-id').value) {
      renderLedger(await call(storeUrl(`/safes/${encodeURIComponent($('#safe-id').value)}`)));
    }
    renderTransfers(await call(storeUrl('/transfers', { status: view.status })));
  } catch (error) {
    say(`Could not load the safes and transfers: ${error.message}`, true);
  } finally {
    $('#safes').setAttribute('aria-busy', 'false');
  }
}

async function onSafe(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const currency = form.currency.value.trim().toUpperCase();
  const minor = toMinor(form.amount.value, currency);
  if (minor === null) {
    say(`The amount is not an amount in ${currency}.`, true);
    return;
  }
  const body = { amounts: { [currency]: minor }, employee: form.employee.value.trim() };
  for (const name of ['register', 'of_transfer', 'bag']) {
    if (form[name].value.trim()) body[name] = form[name].value.trim();
  }
  try {
    const result = await call(storeUrl(
      `/safes/${encodeURIComponent(form.safe.value)}/${form.action.value}`), body);
    say(result.transfer
      ? `Recorded: transfer ${result.transfer.transfer_id} (${result.transfer.status}).`
      : 'Recorded.');
    form.amount.value = '';
    await load();
  } catch (error) {
    say(`Refused: ${error.message}`, true);
  }
}

async function onReconcile(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const selected = [...document.querySelectorAll('#transfers-table input:checked')]
    .map((box) => box.value);
  const what = event.submitter?.value || 'reconcile';
  const base = { employee: form.employee.value.trim(), role: 'manager' };
  const reason = form.reason.value.trim();
  try {
    if (what === 'reconcile') {
      await call(storeUrl('/transfers/reconcile'), {
        ...base, transfers: selected, ...(reason ? { reason } : {}) });
    } else {
      for (const id of selected) {
        await call(storeUrl('/transfers/unreconcile'), { ...base, transfer_id: id, reason });
      }
    }
    say(`${what === 'reconcile' ? 'Reconciled' : 'Unreconciled'}: ${selected.join(', ')}.`);
    await load();
  } catch (error) {
    say(`Refused: ${error.message}`, true);
  }
}

function onTab(event) {
  const tab = event.target.closest('[role="tab"]');
  if (!tab) return;
  view.status = tab.dataset.status;
  for (const t of document.querySelectorAll('#safes [role="tab"]')) {
    t.setAttribute('aria-selected', String(t === tab));
  }
  load();
}

function start() {
  view.store = (new URLSearchParams(location.search).get('store') || '').trim();
  $('#filters').addEventListener('submit', () => {
    view.store = $('#store').value.trim();
    load();
  });
  $('#safe-form').addEventListener('submit', onSafe);
  $('#safe-id').addEventListener('change', load);
  $('#reconcile-form').addEventListener('submit', onReconcile);
  $('#safes [role="tablist"]').addEventListener('click', onTab);
  load();
}

start();
