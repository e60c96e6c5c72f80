// keras-cifar browser front end: plain DOM, no dependencies, same-origin API only.
'use strict';

const API = { model: '/v1/model', predict: '/v1/predict?top_k=5&explain=true' };
// Used until (or if never) the metadata arrives; the server still enforces its own limits.
const limits = { max_upload_bytes: 0, max_batch: 32 };

const $ = (id) => document.getElementById(id);
const ui = {
  modelInfo: $('model-info'), dropZone: $('drop-zone'), fileInput: $('file-input'),
  samples: $('samples'), sampleList: $('sample-list'), status: $('status'),
  clear: $('clear-button'), results: $('results'),
};
let jobCounter = 0; // only the most recent job may write the status line
const previewUrls = new Map(); // card -> object URL, revoked when the card is removed

// Builds elements with textContent/attributes only, so server or file-name text is never parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c != null && c !== ''));
  return node;
}

const clamp01 = (p) => (Number.isFinite(Number(p)) ? Math.min(1, Math.max(0, Number(p))) : 0);
const percent = (p) => `${(clamp01(p) * 100).toFixed(1)} %`;
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

const formatBytes = (n) => (n < 1024 ? `${n} bytes` : n < 1048576 ? `${Math.round(n / 1024)} KB`
  : `${(n / 1048576).toFixed(1).replace(/\.0$/, '')} MB`);

const setStatus = (text, state = 'idle') => { ui.status.textContent = text; ui.status.dataset.state = state; };

// One place that turns every failure mode (offline, HTML error page, JSON error) into a readable Error.
async function request(url, options = {}) {
  let res;
  try {
    res = await fetch(url, { ...options, headers: { Accept: 'application/json' } });
  } catch {
    throw new Error('Could not reach the server. Check your connection and try again.');
  }
  const body = await res.json().catch(() => null);
  if (res.ok && body) return body;
  const info = body && typeof body.error === 'object' ? body.error : null;
  const fallback = res.ok
    ? 'The server sent a response that could not be read.'
    : `The server answered with an error (HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}).`;
  const err = new Error(info && info.message ? String(info.message) : fallback);
  err.filename = info && info.filename ? String(info.filename) : null;
  throw err;
}

async function loadModel() {
  try {
    showModel(await request(API.model));
  } catch (err) {
    ui.modelInfo.textContent = `Model information unavailable: ${err.message} You can still upload images.`;
    ui.modelInfo.dataset.state = 'error';
  }
}

function showModel(meta) {
  const parts = [meta.architecture, meta.format].filter((s) => typeof s === 'string' && s);
  const metrics = meta.metrics || {};
  if (typeof metrics.accuracy === 'number') {
    // Accept either a fraction (0.9075) or an already-scaled percentage (90.75).
    const acc = metrics.accuracy <= 1 ? metrics.accuracy * 100 : metrics.accuracy;
    parts.push(`${acc.toFixed(1)} % test accuracy`);
    if (metrics.num_test_images) ui.modelInfo.title = `Measured on ${Number(metrics.num_test_images).toLocaleString()} test images`;
  }
  ui.modelInfo.textContent = parts.join(' · ') || 'Model ready';
  ui.modelInfo.dataset.state = 'ready';

  const lim = meta.limits || {};
  if (lim.max_upload_bytes > 0) limits.max_upload_bytes = Number(lim.max_upload_bytes);
  if (lim.max_batch >= 1) limits.max_batch = Math.floor(lim.max_batch);
  showSamples(meta.samples);
}

function showSamples(samples) {
  const valid = (Array.isArray(samples) ? samples : []).filter((s) => s && typeof s.url === 'string');
  ui.sampleList.replaceChildren(...valid.map(sampleButton));
  ui.samples.hidden = valid.length === 0;
}

function sampleButton({ label, url }) {
  const name = String(label ?? 'sample');
  const button = el('button', { type: 'button', class: 'sample', 'aria-label': `Classify sample: ${name}` },
    el('img', { src: url, alt: '', width: 64, height: 64, decoding: 'async' }),
    el('span', { class: 'sample-caption', 'aria-hidden': 'true', text: name }));
  button.addEventListener('click', () => classifySample(url, name));
  return button;
}

async function classifySample(url, label) {
  let file;
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const blob = await res.blob();
    let name = '';
    try { name = decodeURIComponent(new URL(url, location.href).pathname.split('/').pop()); } catch { /* keep fallback */ }
    file = new File([blob], name || `${label}.png`, { type: blob.type });
  } catch (err) {
    setStatus(`Could not load the sample "${label}" (${err.message}).`, 'error');
    return;
  }
  classify([file]);
}

// Cards appear immediately with the preview, then get filled in when the server answers.
function createCard(file) {
  const url = URL.createObjectURL(file);
  const img = el('img', { class: 'preview', src: url, alt: `Preview of ${file.name}` });
  // Tiny images (e.g. 32x32 CIFAR samples) look better scaled up with hard pixels than blurred.
  img.addEventListener('load', () => img.classList.toggle('is-tiny', img.naturalWidth <= 64));
  img.addEventListener('error', () => { img.hidden = true; });
  const card = el('article', { class: 'result', 'data-testid': 'result', 'data-status': 'pending', 'aria-busy': 'true' },
    el('div', { class: 'preview-frame' }, img),
    el('div', { class: 'result-body' },
      el('h3', { class: 'filename', title: file.name, text: file.name }),
      el('p', { class: 'pending', text: 'Classifying…' })));
  previewUrls.set(card, url);
  return card;
}

function settleCard(card, status, nodes) {
  const body = card.querySelector('.result-body');
  body.querySelector('.pending')?.remove();
  body.append(...nodes.filter(Boolean));
  card.dataset.status = status;
  card.removeAttribute('aria-busy');
}

function showError(card, message) {
  settleCard(card, 'error', [el('p', { class: 'error', 'data-testid': 'error', text: message })]);
}

// What the model saw (the 32x32 input) and, in red, where covering an 8x8 patch lowered the top class most.
function explanation(prediction, label) {
  const { input_png: src, saliency: grid } = prediction;
  if (typeof src !== 'string' || !src.startsWith('data:image/png;base64,') || !Array.isArray(grid)) return null;
  const patch = Number(prediction.saliency_patch) || 8;
  const stride = Number(prediction.saliency_stride) || 4;
  const seen = el('img', { class: 'seen', src, alt: 'The 32 × 32 image the model saw', 'data-testid': 'model-input' });
  const canvas = el('canvas', { class: 'saliency', width: 32, height: 32, 'data-testid': 'saliency', role: 'img',
    'aria-label': `Where hiding part of the image lowers the score of ${label} most` });
  const source = new Image();
  source.addEventListener('load', () => drawSaliency(canvas, source, grid, patch, stride));
  source.src = src;
  return el('figure', { class: 'explain' }, seen, canvas,
    el('figcaption', { text: `What the model saw, and where hiding a patch lowers “${label}” most (red)` }));
}

function drawSaliency(canvas, image, grid, patch, stride) {
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.drawImage(image, 0, 0, width, height);
  const pixels = ctx.getImageData(0, 0, width, height);
  const heat = new Float32Array(width * height);
  const count = new Float32Array(width * height);
  grid.forEach((row, r) => (Array.isArray(row) ? row : []).forEach((value, c) => {
    for (let y = r * stride; y < Math.min(height, r * stride + patch); y += 1) {
      for (let x = c * stride; x < Math.min(width, c * stride + patch); x += 1) {
        heat[y * width + x] += clamp01(value);
        count[y * width + x] += 1;
      }
    }
  }));
  for (let i = 0; i < heat.length; i += 1) {
    const h = count[i] ? heat[i] / count[i] : 0;
    const d = pixels.data;
    const grey = (d[4 * i] + d[4 * i + 1] + d[4 * i + 2]) / 3;
    d[4 * i] = grey * (1 - h) + 255 * h; // dimmed grey where nothing matters, red where the label's evidence is
    d[4 * i + 1] = grey * (1 - h) * 0.8;
    d[4 * i + 2] = grey * (1 - h) * 0.8;
  }
  ctx.putImageData(pixels, 0, 0);
}

function showPrediction(card, prediction) {
  const top = prediction.top_k;
  const fills = [];
  const bars = el('ol', { class: 'bars', 'aria-label': `Top ${top.length} predictions` }, ...top.map((t, i) => {
    const fill = el('span', { class: 'bar-fill' });
    fills.push([fill, clamp01(t.probability)]);
    return el('li', { class: i === 0 ? 'bar is-top' : 'bar' },
      el('span', { class: 'bar-label', text: t.label }),
      el('span', { class: 'bar-track', 'aria-hidden': 'true' }, fill),
      el('span', { class: 'bar-value', text: percent(t.probability) }));
  }));
  const best = top[0];
  const dims = prediction.width && prediction.height
    ? el('p', { class: 'dims', text: `${prediction.width} × ${prediction.height} px` }) : null;
  settleCard(card, 'done', [
    el('p', { class: 'top1' },
      el('span', { class: 'top1-label', text: best.label }), ' ',
      el('span', { class: 'top1-probability', text: percent(best.probability) })),
    bars, dims, explanation(prediction, best.label)]);
  card.dataset.label = String(best.label);
  // Widths are set after layout so the CSS transition grows the bars from zero.
  void bars.offsetWidth;
  for (const [fill, p] of fills) fill.style.width = `${p * 100}%`;
}

async function classify(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const job = ++jobCounter;
  const report = (text, state) => { if (job === jobCounter) setStatus(text, state); };
  const cards = files.map(createCard);
  ui.results.prepend(...cards); // newest upload first, picked order kept within it
  const errors = [];
  const fail = (card, message) => { showError(card, message); errors.push(message); };

  const queue = [];
  files.forEach((file, i) => {
    const max = limits.max_upload_bytes;
    if (max && file.size > max) {
      fail(cards[i], `"${file.name}" is ${formatBytes(file.size)}, over the ${formatBytes(max)} upload limit.`);
    } else {
      queue.push({ file, card: cards[i] });
    }
  });

  let timing = 0, done = 0;
  if (queue.length) report(`Classifying ${plural(queue.length, 'image')}…`, 'busy');
  for (let i = 0; i < queue.length; i += limits.max_batch) {
    const result = await sendBatch(queue.slice(i, i + limits.max_batch), fail);
    timing += result.timing; done += result.done;
  }

  if (done) {
    const failed = errors.length ? ` · ${errors.length} of ${files.length} failed` : '';
    report(`Done in ${Math.round(timing)} ms${failed}`, errors.length ? 'warning' : 'done');
  } else {
    report(errors.length === 1 ? errors[0]
      : `None of the ${files.length} files could be classified; see the messages below.`, 'error');
  }
}

// If the server rejects a whole request because of one named file, mark that file
// and resend the rest, so one bad file does not sink the good ones.
async function sendBatch(items, fail) {
  const pending = items.slice();
  while (pending.length) {
    const form = new FormData();
    for (const { file } of pending) form.append('files', file, file.name);
    try {
      const body = await request(API.predict, { method: 'POST', body: form });
      const predictions = Array.isArray(body.predictions) ? body.predictions : [];
      let done = 0;
      pending.forEach(({ card }, i) => {
        const p = predictions[i]; // same order as uploaded
        if (p && Array.isArray(p.top_k) && p.top_k.length) {
          showPrediction(card, p);
          done += 1;
        } else {
          fail(card, p && p.error && p.error.message ? String(p.error.message) : 'The server returned no prediction for this image.');
        }
      });
      return { done, timing: Number(body.timing_ms) || 0 };
    } catch (err) {
      const bad = err.filename ? pending.findIndex(({ file }) => file.name === err.filename) : -1;
      if (bad >= 0 && pending.length > 1) {
        fail(pending[bad].card, err.message);
        pending.splice(bad, 1);
        continue;
      }
      for (const { card } of pending) fail(card, err.message);
      return { done: 0, timing: 0 };
    }
  }
  return { done: 0, timing: 0 };
}

ui.dropZone.addEventListener('click', () => ui.fileInput.click());
ui.dropZone.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault(); // stop Space from scrolling the page
    ui.fileInput.click();
  }
});
ui.fileInput.addEventListener('change', () => {
  const files = Array.from(ui.fileInput.files || []);
  ui.fileInput.value = ''; // allow picking the same file again
  classify(files);
});

// dragenter/dragleave also fire for child elements; count them to know when the pointer really left.
let dragDepth = 0;
const setDragging = (on) => ui.dropZone.classList.toggle('is-dragover', on);
ui.dropZone.addEventListener('dragenter', (e) => { e.preventDefault(); dragDepth += 1; setDragging(true); });
ui.dropZone.addEventListener('dragover', (e) => { e.preventDefault(); if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy'; });
ui.dropZone.addEventListener('dragleave', () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) setDragging(false); });
ui.dropZone.addEventListener('drop', (e) => {
  e.preventDefault(); dragDepth = 0; setDragging(false);
  classify(e.dataTransfer ? e.dataTransfer.files : []);
});
// A drop that misses the zone would otherwise make the browser navigate away to the file.
window.addEventListener('dragover', (e) => {
  if (!ui.dropZone.contains(e.target)) { e.preventDefault(); if (e.dataTransfer) e.dataTransfer.dropEffect = 'none'; }
});
window.addEventListener('drop', (e) => e.preventDefault());

ui.clear.addEventListener('click', () => {
  for (const url of previewUrls.values()) URL.revokeObjectURL(url);
  previewUrls.clear();
  ui.results.replaceChildren();
  jobCounter += 1; // answers still in flight belong to removed cards; keep them off the status line
  setStatus('Results cleared.');
});

loadModel();
