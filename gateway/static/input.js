/*
 * What the trader types and submits survives the page's updates. Generic, as app.js: it
 * knows nothing about orders, prices or accounts; loaded after htmx and htmx-ext-ws.
 *
 * 1. Optimistic UI: an element issuing an htmx request with data-optimistic='{"status": ..,
 *    "message": ..}' is patched the moment the request is sent. If the response is not swapped
 *    and not 2xx (429, 5xx, other 4xx, network error, timeout, abort), the exact pre-submit DOM
 *    (including typed values) is put back; a 429 then counts down Retry-After with submit
 *    disabled, anything else shows the server's one-sentence answer (or "could not reach the
 *    server") in the element's message slot, marked data-status="failed". A swapped response
 *    (2xx, 422 with field errors) replaces the patched DOM itself; whatever patch is left on
 *    elements it did not replace is undone. Elements without a patch show failures alike.
 * 2. Live renders keep what the trader is doing: typed values and focus move onto the
 *    equivalent element of a part that replaces them.
 */
(function () {
  'use strict';

  const DEFAULT_RETRY_AFTER_S = 5;
  const SUBMITS = 'button:not([type]), button[type="submit"], input[type="submit"], input[type="image"]';
  const CONTROLS = 'input, select, textarea';
  const NO_LIVE_VALUE = ['file', 'hidden', 'submit', 'button', 'reset', 'image'];

  // ---- 1. Optimistic UI
  const inFlight = new WeakMap(); // xhr -> record of one optimistic request
  const coolingDown = new WeakSet(); // elements waiting out a 429's Retry-After

  function parsePatch(elt) {
    try {
      const patch = JSON.parse(elt.getAttribute('data-optimistic'));
      return patch && typeof patch === 'object' ? patch : null;
    } catch (err) {
      return null;
    }
  }

  function submitButtons(elt) {
    if (elt instanceof HTMLFormElement) {
      return Array.from(elt.elements).filter(function (n) { return n.matches(SUBMITS); });
    }
    const self = elt.matches('button, input[type="submit"], input[type="button"]') ? [elt] : [];
    return self.concat(Array.from(elt.querySelectorAll(SUBMITS)));
  }

  function pathTo(root, node) {
    const path = [];
    if (!node || !root.contains(node)) return null;
    for (let n = node; n !== root; n = n.parentNode) {
      path.unshift(Array.prototype.indexOf.call(n.parentNode.childNodes, n));
    }
    return path;
  }

  function follow(root, path) {
    let n = root;
    for (let i = 0; path && n && i < path.length; i++) n = n.childNodes[path[i]];
    return path ? n : null;
  }

  function controlsIn(node) {
    return (node.matches(CONTROLS) ? [node] : []).concat(Array.from(node.querySelectorAll(CONTROLS)));
  }

  // What the user typed, ticked or selected in ``control``, onto ``twin`` (same kind).
  function copyState(control, twin) {
    if (control.type === 'checkbox' || control.type === 'radio') {
      twin.checked = control.checked;
    } else if (control.tagName === 'SELECT') {
      const values = Array.from(control.options).filter(function (o) { return o.selected; })
        .map(function (o) { return o.value; });
      Array.from(twin.options).forEach(function (o) { o.selected = values.indexOf(o.value) >= 0; });
    } else if (NO_LIVE_VALUE.indexOf(control.type) < 0) {
      twin.value = control.value;
    }
  }

  // cloneNode copies attributes, not what the user typed into selects; copy live state across.
  function cloneWithState(node) {
    const copy = node.cloneNode(true);
    const copies = controlsIn(copy);
    controlsIn(node).forEach(function (control, i) { copyState(control, copies[i]); });
    return copy;
  }

  function snapshot(elt, target) {
    const roots = elt.contains(target) ? [elt] : target.contains(elt) ? [target] : [target, elt];
    const record = { elt: elt, eltCopy: null, roots: [], undo: [], swap: null, patched: false };
    roots.forEach(function (node) {
      const copy = cloneWithState(node);
      if (node.contains(elt)) record.eltCopy = follow(copy, pathTo(node, elt));
      record.roots.push({ node: node, copy: copy, focus: pathTo(node, document.activeElement) });
    });
    return record;
  }

  // Each change records how to undo itself, so a partly replaced element can be cleaned up.
  function change(record, undo) { record.undo.push(undo); }

  function setAttr(record, el, name, value) {
    const old = el.getAttribute(name);
    change(record, function () { old === null ? el.removeAttribute(name) : el.setAttribute(name, old); });
    el.setAttribute(name, value);
  }

  function setText(record, el, text) {
    if (el instanceof HTMLInputElement) {
      const old = el.value;
      change(record, function () { el.value = old; });
      el.value = text;
      return;
    }
    const old = Array.from(el.childNodes);
    change(record, function () { el.replaceChildren.apply(el, old); });
    el.textContent = text;
  }

  function applyPatch(record, patch, submitter) {
    const elt = record.elt;
    Object.keys(patch).forEach(function (key) {
      const value = patch[key];
      if (key === 'message' || value === null || typeof value === 'object') return;
      const name = key.replace(/_/g, '-').replace(/[A-Z]/g, function (c) { return '-' + c.toLowerCase(); });
      setAttr(record, elt, 'data-' + name, String(value));
    });
    setAttr(record, elt, 'aria-busy', 'true');
    const buttons = submitButtons(elt);
    buttons.forEach(function (b) {
      const was = b.disabled;
      change(record, function () { b.disabled = was; });
      b.disabled = true;
    });
    if (typeof patch.message === 'string') {
      const slot = elt.querySelector('[data-optimistic-message]') ||
        (submitter && buttons.indexOf(submitter) >= 0 ? submitter : buttons[0]);
      if (slot) setText(record, slot, patch.message);
    }
    record.patched = true;
  }

  function undoPatch(record) {
    record.undo.reverse().forEach(function (undo) { undo(); });
    record.undo = [];
  }

  // Put the pre-submit DOM back; returns the restored copy of the requesting element.
  function restoreSnapshot(record) {
    record.roots.forEach(function (root) {
      if (!root.node.isConnected) return; // replaced meanwhile (e.g. a live render): newer wins
      root.node.replaceWith(root.copy);
      htmx.process(root.copy);
      const focused = follow(root.copy, root.focus);
      if (focused && focused.focus) focused.focus();
    });
    return record.eltCopy && record.eltCopy.isConnected ? record.eltCopy : null;
  }

  function retryAfterSeconds(xhr) {
    const raw = (xhr.getResponseHeader('Retry-After') || '').trim();
    if (/^\d+$/.test(raw)) return parseInt(raw, 10);
    const when = Date.parse(raw);
    return isNaN(when) ? DEFAULT_RETRY_AFTER_S : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  function coolDown(elt, seconds) {
    if (!elt || !elt.isConnected) return;
    const record = { undo: [] };
    let slot = elt.querySelector('[data-optimistic-message]');
    if (!slot) {
      slot = document.createElement('p');
      slot.className = 'rate-limit-notice';
      slot.setAttribute('role', 'status');
      elt.appendChild(slot);
      change(record, function () { slot.remove(); });
    } else {
      setText(record, slot, '');
    }
    setAttr(record, elt, 'data-status', 'rate-limited');
    submitButtons(elt).forEach(function (b) {
      const was = b.disabled;
      change(record, function () { b.disabled = was; });
      b.disabled = true;
    });
    coolingDown.add(elt);
    const deadline = Date.now() + seconds * 1000;
    let shown = null;
    const tick = function () {
      const left = Math.ceil((deadline - Date.now()) / 1000);
      if (!elt.isConnected || left <= 0) {
        clearInterval(timer);
        coolingDown.delete(elt);
        if (elt.isConnected) undoPatch(record);
        return;
      }
      if (left !== shown) slot.textContent = 'Too many requests — retry in ' + left + ' s';
      shown = left;
    };
    const timer = setInterval(tick, 200);
    tick();
  }

  function isCoolingDown(elt) {
    for (let n = elt; n; n = n.parentElement) if (coolingDown.has(n)) return true;
    return false;
  }

  document.addEventListener('htmx:beforeRequest', function (evt) {
    const elt = evt.detail.elt;
    if (isCoolingDown(elt)) {
      evt.preventDefault();
      return;
    }
    if (!elt.hasAttribute('data-optimistic')) return;
    // Snapshot now: htmx adds its request classes / hx-disabled-elt only after this event.
    inFlight.set(evt.detail.xhr, snapshot(elt, evt.detail.target || elt));
  });

  // Patch on beforeSend, which fires only if no listener cancelled beforeRequest.
  document.addEventListener('htmx:beforeSend', function (evt) {
    const record = inFlight.get(evt.detail.xhr);
    if (!record) return;
    const patch = parsePatch(record.elt);
    const trigger = evt.detail.requestConfig && evt.detail.requestConfig.triggeringEvent;
    if (patch) applyPatch(record, patch, trigger && trigger.submitter);
  });

  document.addEventListener('htmx:beforeSwap', function (evt) {
    const record = inFlight.get(evt.detail.xhr);
    if (record) record.swap = evt.detail; // read shouldSwap later, after every listener had its say
  });

  function finish(evt) {
    const xhr = evt.detail.xhr;
    const record = xhr && inFlight.get(xhr);
    if (!record) return;
    inFlight.delete(xhr); // htmx re-fires afterRequest on an ancestor if the element was replaced
    if (!record.patched) return;
    const ok = xhr.status >= 200 && xhr.status < 300;
    const swapped = !!(record.swap && record.swap.shouldSwap);
    if (ok || swapped) {
      undoPatch(record);
      return;
    }
    // Restore once htmx has finished dispatching (sendError / timeout follow afterRequest), so
    // those events still bubble from the original element to document listeners.
    queueMicrotask(function () {
      const elt = restoreSnapshot(record);
      if (xhr.status === 429) coolDown(elt, retryAfterSeconds(xhr));
      else showFailure(elt, xhr);
    });
  }

  // What went wrong, in the server's words (its 4xx/5xx bodies are one plain sentence);
  // the browser only says so itself when no answer came at all.
  function failureText(xhr) {
    if (!xhr || xhr.status === 0) return 'Could not reach the server. Nothing was submitted; retry.';
    const text = (xhr.responseText || '').trim();
    if (text && text.length <= 300 && text.charAt(0) !== '<') return text;
    return 'The request failed (HTTP ' + xhr.status + '). Nothing was changed; retry.';
  }

  function showFailure(elt, xhr) {
    if (!elt || !elt.isConnected) return;
    const root = elt.closest('[id$="-root"]') || elt;
    let slot = elt.querySelector('[data-optimistic-message]') || root.querySelector('.event-failure');
    if (!slot) {
      slot = document.createElement('p');
      slot.className = 'event-failure';
      root.appendChild(slot);
    }
    slot.textContent = failureText(xhr);
    slot.className = 'event-failure'; // never styled as the outcome an earlier answer had
    slot.setAttribute('role', 'alert');
    elt.setAttribute('data-status', 'failed');
  }

  // Elements without an optimistic patch: say what failed in their panel.
  ['htmx:responseError', 'htmx:sendError', 'htmx:timeout'].forEach(function (name) {
    document.addEventListener(name, function (evt) {
      const xhr = evt.detail.xhr;
      if (xhr && (inFlight.has(xhr) || xhr.status === 429)) return; // finish() reports those
      showFailure(evt.detail.elt, xhr);
    });
  });

  // afterRequest follows every outcome (swap done, 4xx/5xx, network error, timeout, abort);
  // onLoadError replaces it when response handling threw.
  document.addEventListener('htmx:afterRequest', finish);
  document.addEventListener('htmx:onLoadError', finish);

  // A response whose target a live render replaced while the request was out lands on the
  // element now holding that id: the trader's outcome (a field error, a fill) is never lost.
  document.addEventListener('htmx:beforeSwap', function (evt) {
    const target = evt.detail.target;
    if (target && !target.isConnected && target.id) {
      const current = document.getElementById(target.id);
      if (current) evt.detail.target = current;
    }
  });

  // ---- 2. Live renders keep what the trader is doing
  // A part from the socket replaces elements wholesale. What the trader typed, ticked or
  // selected there (a control whose value differs from the one the server rendered, or the
  // one being typed in) and the focus move onto the equivalent element of the new part: the
  // same id, else the same form, name and position, else the same aria-label. HTTP responses
  // are the server's answer to the trader and are swapped as they come.
  let liveMessage = false;
  document.addEventListener('htmx:wsBeforeMessage', function () {
    liveMessage = true;
    queueMicrotask(function () { liveMessage = false; }); // the message is swapped synchronously
  });

  function dirty(control) {
    if (control.type === 'checkbox' || control.type === 'radio') return control.checked !== control.defaultChecked;
    if (control.tagName === 'SELECT') {
      return Array.from(control.options).some(function (o) { return o.selected !== o.defaultSelected; });
    }
    return NO_LIVE_VALUE.indexOf(control.type) < 0 && control.value !== control.defaultValue;
  }

  // A key naming ``node`` within ``root`` that the same element of a re-render shares.
  function keyOf(root, node) {
    if (node.id) return '#' + node.id;
    const name = node.getAttribute('name');
    if (name) {
      const form = node.closest('form');
      const forms = Array.from(root.querySelectorAll('form'));
      const scope = form && root.contains(form) ? form : root;
      const same = controlsIn(scope).filter(function (c) { return c.getAttribute('name') === name; });
      return 'name:' + forms.indexOf(form) + ':' + name + ':' + same.indexOf(node);
    }
    const label = node.getAttribute('aria-label');
    return label ? 'label:' + label : null;
  }

  function findByKey(root, key) {
    const candidates = (root.matches('*') ? [root] : []).concat(Array.from(root.querySelectorAll('*')));
    if (key.charAt(0) === '#') {
      const id = key.slice(1);
      return candidates.find(function (n) { return n.id === id; }) || null;
    }
    return candidates.find(function (n) { return keyOf(root, n) === key; }) || null;
  }

  document.addEventListener('htmx:oobBeforeSwap', function (evt) {
    const target = evt.detail.target;
    const incoming = evt.detail.fragment && evt.detail.fragment.firstElementChild;
    if (!liveMessage || !target || !incoming) return;
    const active = document.activeElement;
    controlsIn(target).forEach(function (control) {
      if (control !== active && !dirty(control)) return;
      const key = keyOf(target, control);
      const twin = key && findByKey(incoming, key);
      if (twin && twin.tagName === control.tagName && twin.type === control.type) copyState(control, twin);
    });
    if (!active || active === document.body || !target.contains(active)) return;
    const key = keyOf(target, active);
    const twin = key && findByKey(incoming, key);
    if (!twin) return;
    const range = typeof active.selectionStart === 'number'
      ? [active.selectionStart, active.selectionEnd, active.selectionDirection] : null;
    refocus = { twin: twin, range: range };
    queueMicrotask(restoreFocus); // in case the message's end is never signalled
  });

  // Once this message's swaps are done (before anyone else hears of the message).
  let refocus = null;
  function restoreFocus() {
    const pending = refocus;
    refocus = null;
    if (!pending || !pending.twin.isConnected || typeof pending.twin.focus !== 'function') return;
    pending.twin.focus({ preventScroll: true });
    const range = pending.range;
    if (range && typeof pending.twin.setSelectionRange === 'function') {
      try { pending.twin.setSelectionRange(range[0], range[1], range[2]); } catch (err) { /* no selection */ }
    }
  }
  document.addEventListener('htmx:wsAfterMessage', restoreFocus);
})();
