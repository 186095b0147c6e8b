/*
 * The dashboard's page script, with input.js the only hand-written ones. Generic: it knows
 * nothing about orders, prices or accounts. Loaded after htmx and htmx-ext-ws; works under
 * `script-src 'self'` (no eval).
 *
 * 1. CSRF: every htmx request carries X-CSRF-Token from <meta name="csrf-token">.
 * 2. Connection state: #conn-state and <body data-conn-state> follow the ws extension's
 *    events; "stale" after 5 s without a message (the gateway sends one at least every 2 s);
 *    reconnects use capped, fully jittered exponential backoff.
 * 3. Notices (data-notice) are announced once and flag the tab title while it is away.
 * 4. Rows fill the ticket (data-ticket): symbol, or a whole position to close.
 *
 * What the trader types and submits (optimistic submits, live renders that keep typed values
 * and focus) is input.js.
 */
(function () {
  'use strict';

  // htmx-ext-ws 2.0.4 reconnects only after these close codes (see vendor/README.md).
  const RECONNECT_CODES = [1006, 1011, 1012, 1013];
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 10000;

  // Swapped content is live at once: htmx wires new elements up when it settles, 20 ms after
  // a swap by default, and a key pressed in that window (a second Enter on ▲) did nothing.
  htmx.config.defaultSettleDelay = 0;

  // ---- 2. WebSocket reconnect backoff ("full jitter": uniform in [0, min(cap, base * 2^n)))
  htmx.config.wsReconnectDelay = function (retryCount) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, retryCount));
    return Math.floor(Math.random() * ceiling);
  };

  // ---- 1. CSRF
  document.addEventListener('htmx:configRequest', function (evt) {
    const meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) evt.detail.headers['X-CSRF-Token'] = meta.content;
  });

  // ---- 2. Connection state
  const CONN_TEXT = {
    live: 'live',
    stale: 'stale — no data for 5 s',
    reconnecting: 'reconnecting…',
    offline: 'offline — reload the page',
  };
  const STALE_AFTER_MS = 5000; // the gateway sends something at least every 2 s
  let lastMessage = Date.now();

  function setConnState(state) {
    const badge = document.getElementById('conn-state');
    if (badge) {
      badge.textContent = CONN_TEXT[state];
      badge.classList.remove('conn--live', 'conn--stale', 'conn--reconnecting', 'conn--offline');
      badge.classList.add('conn--' + state);
    }
    document.body.setAttribute('data-conn-state', state);
  }

  document.addEventListener('htmx:wsOpen', function () {
    lastMessage = Date.now();
    setConnState('live');
  });
  document.addEventListener('htmx:wsAfterMessage', function () {
    lastMessage = Date.now();
    if (document.body.getAttribute('data-conn-state') === 'stale') setConnState('live');
  });
  setInterval(function () {
    if (document.body.getAttribute('data-conn-state') === 'live' &&
        Date.now() - lastMessage > STALE_AFTER_MS) setConnState('stale');
  }, 1000);
  document.addEventListener('htmx:wsError', function () { setConnState('reconnecting'); });
  document.addEventListener('htmx:wsClose', function (evt) {
    const code = evt.detail.event && evt.detail.event.code;
    setConnState(RECONNECT_CODES.indexOf(code) >= 0 ? 'reconnecting' : 'offline');
  });

  // ---- 3. Notices: announced once, in the tab title while the trader is away
  // Elements with data-notice="<key>" (a resting order filled or cancelled, a risk alert)
  // arrive in live parts. Each new key is read out once through the page's static
  // #announcer region and, while the tab is hidden or unfocused, shown in its title; a
  // re-render with the same keys (a reconnect, a reload) announces nothing. Order toasts
  // are hidden 10 s after they arrived.
  const NOTICE_SHOWN_MS = 10000;
  const noticed = new Map(); // key -> when it was first seen here
  const baseTitle = document.title;

  function announce(text) {
    const region = document.getElementById('announcer');
    if (!region) return;
    const line = document.createElement('p');
    line.textContent = text;
    region.appendChild(line);
    while (region.childElementCount > 3) region.firstElementChild.remove();
  }

  function away() { return document.visibilityState !== 'visible' || !document.hasFocus(); }

  function noteNotices(initial) {
    const now = Date.now();
    document.querySelectorAll('[data-notice]').forEach(function (el) {
      const key = el.getAttribute('data-notice');
      if (!noticed.has(key)) {
        noticed.set(key, initial ? 0 : now);
        if (!initial) {
          const text = el.textContent.replace(/\s+/g, ' ').trim();
          announce(text);
          if (away()) document.title = '● ' + text + ' — ' + baseTitle;
        }
      }
      if (el.classList.contains('toast') && now - noticed.get(key) > NOTICE_SHOWN_MS) {
        el.setAttribute('data-notice-old', '');
      }
    });
  }

  function back() { if (!away()) document.title = baseTitle; }
  document.addEventListener('visibilitychange', back);
  window.addEventListener('focus', back);
  document.addEventListener('htmx:wsAfterMessage', function () { noteNotices(false); });
  setInterval(function () { noteNotices(false); }, 1000);
  noteNotices(true);

  // ---- 4. Rows fill the ticket
  // A button with data-ticket='{"symbol": "AAPL", ...}' (a watchlist or portfolio row)
  // writes those values into the order form's fields of the same names, as if typed (so
  // the what-if follows), and moves focus to data-ticket-focus (a selector inside the
  // form, e.g. the Sell button of a "Close") or else to the quantity. Nothing is submitted.
  document.addEventListener('click', function (evt) {
    const source = evt.target.closest && evt.target.closest('[data-ticket]');
    const form = document.querySelector('#order-root form');
    if (!source || !form) return;
    let values;
    try { values = JSON.parse(source.getAttribute('data-ticket')); } catch (err) { return; }
    Object.keys(values || {}).forEach(function (name) {
      const field = form.querySelector('[name="' + CSS.escape(name) + '"]:not([type=hidden]):not(button)');
      if (!field) return;
      field.value = String(values[name]);
      field.dispatchEvent(new Event('input', { bubbles: true }));
    });
    const focus = form.querySelector(source.getAttribute('data-ticket-focus') || '[name=quantity]');
    if (focus) focus.focus();
  });
})();
