/*
 * idcscan patch dashboard. Plain JavaScript, no build step, no network access beyond this server.
 *
 * Each chosen image gets a card at once (local thumbnail + spinner); the images are then sent
 * to POST /predict?explain=true a few at a time, so results appear as they are ready, one file's
 * rejection never hides the others, and the server's own error text is shown on that file's card.
 */
"use strict";

(function () {
  const MAX_PARALLEL = 4;

  const $ = (id) => document.getElementById(id);
  const els = {
    input: $("file-input"),
    dropzone: $("dropzone"),
    results: $("results"),
    empty: $("empty-state"),
    summary: $("summary"),
    explainAll: $("explain-all"),
    clear: $("clear-results"),
    csv: $("download-csv"),
    template: $("result-template"),
    modelBody: $("model-card-body"),
    status: $("model-status"),
    statusText: $("model-status-text"),
    demoBanner: $("demo-banner"),
    serverBanner: $("server-banner"),
    serverBannerText: $("server-banner-text"),
    disclaimer: $("disclaimer-text"),
    footerVersions: $("footer-versions"),
    examples: $("examples"),
    examplesList: $("examples-list"),
    examplesNote: $("examples-note"),
  };

  /** Every analysed (or rejected) file, in upload order. */
  const items = [];
  const state = { maxPatchSide: 512, reviewThreshold: NaN };
  const queue = [];
  let running = 0;
  let nextId = 1;

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "style") node.style.cssText = value; // CSSOM: the CSP refuses style attributes
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of [].concat(children || [])) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function pct(value) {
    return `${Number(value).toFixed(2)}%`;
  }

  function humanize(key) {
    const special = {
      auc: "AUC", roc_auc: "ROC AUC", pr_auc: "PR AUC", ece: "ECE", mpp: "µm / px",
      f1: "F1", ppv: "PPV", npv: "NPV", tpr: "TPR", tnr: "TNR", fpr: "FPR", ci: "CI",
      onnx_sha256: "ONNX sha256", n: "n",
    };
    if (special[key]) return special[key];
    return String(key)
      .replace(/_/g, " ")
      .replace(/\b(auc|ci|ece|f1|roc|pr|id)\b/gi, (m) => m.toUpperCase())
      .replace(/^./, (c) => c.toUpperCase());
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return value.toLocaleString("en-US");
      return Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(3);
    }
    if (Array.isArray(value)) {
      if (value.every((v) => typeof v === "number") && value.length === 2) {
        return `${formatValue(value[0])} – ${formatValue(value[1])}`;
      }
      return value.map(formatValue).join(", ");
    }
    if (typeof value === "object") {
      return Object.entries(value).map(([k, v]) => `${humanize(k)}: ${formatValue(v)}`).join("; ");
    }
    return String(value);
  }

  /** A definition list of flat key/values; nested objects are flattened one level. */
  function kvList(entries) {
    const dl = el("dl", { class: "kv" });
    for (const [key, value] of entries) {
      if (value === undefined || value === "") continue;
      const text = formatValue(value);
      // A sentence does not fit the narrow value column: it goes under its label instead.
      const long = String(text).length > 40;
      dl.append(el("dt", { class: long ? "kv__key--long" : "", text: key }),
        el("dd", { class: long ? "kv__long" : "", text }));
    }
    return dl;
  }

  function section(title, content) {
    const frag = document.createDocumentFragment();
    frag.append(el("h3", { class: "panel__subtitle", text: title }), content);
    return frag;
  }

  // ---------------------------------------------------------------- model card

  /** The readable card from /model-card: sections of rows, a confusion table, a report link. */
  function renderReadableCard(card) {
    const body = els.modelBody;
    body.replaceChildren();
    const chips = [];
    if (card.demo) chips.push(el("span", { class: "badge badge--warning", text: "demo · synthetic data" }));
    body.append(
      el("p", { class: "model-name", text: card.title }),
      el("div", { class: "model-meta" }, chips),
      el("p", { class: "small prose", text: card.summary }),
      el("h3", { class: "panel__subtitle", text: "Decision" }),
      el("p", { class: "small prose" }, [el("strong", { text: "Call: " }), card.decision.call]),
      el("p", { class: "small prose" }, [el("strong", { text: "Review flag: " }), card.decision.review]),
      el("p", { class: "small prose" }, [el("strong", { text: "Slide maps: " }), card.decision.slide_area]),
    );
    for (const sec of card.sections) {
      const frag = document.createDocumentFragment();
      frag.append(kvList(sec.rows));
      if (sec.note) frag.append(el("p", { class: "muted small prose", text: sec.note }));
      if (sec.confusion) {
        const c = sec.confusion;
        const table = el("table", { class: "card-table", "data-testid": "confusion-matrix" }, [
          el("caption", { text: c.caption }),
          el("thead", {}, el("tr", {}, c.columns.map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, c.rows.map((row) => el("tr", {}, row.map((v, i) =>
            el(i === 0 ? "th" : "td", i === 0 ? { scope: "row", text: v } : { text: v }))))),
        ]);
        frag.append(table);
      }
      if (sec.link) {
        frag.append(el("p", { class: "small" }, el("a", { href: sec.link.href, text: sec.link.text })));
      }
      body.append(section(sec.title, frag));
    }
    if (!card.has_report) {
      body.append(el("p", { class: "muted small prose",
        text: "No test-set report of this model was found next to it; run `idcscan evaluate` to add one." }));
    }
  }

  function renderHealth(health) {
    const card = health.model || {};
    const demo = Boolean(card.demo || health.demo);
    els.demoBanner.hidden = !demo;
    state.reviewThreshold = Number(card.threshold);
    for (const node of document.querySelectorAll(".review-threshold")) {
      node.textContent = pct(state.reviewThreshold * 100);
    }
    const label = `${card.name || "model"}${card.version ? ` v${card.version}` : ""}`;
    setStatus(health.model_loaded === false ? "bad" : "ok",
      health.model_loaded === false ? "Model not loaded" : `${label}${demo ? " · demo" : ""} · ready`);

    const limits = health.limits || {};
    if (limits.max_upload_mb) {
      $("upload-limit").textContent = ` Up to ${formatValue(limits.max_upload_mb)} MB per file.`;
    }
    if (limits.max_patch_side) {
      state.maxPatchSide = Number(limits.max_patch_side);
      $("max-patch-side").textContent = String(state.maxPatchSide);
    }
    const disclaimer = health.disclaimer || card.disclaimer;
    if (disclaimer) els.disclaimer.textContent = disclaimer;
    const versions = health.versions || card.versions || {};
    // Which engine scored matters: bf16 and fp32 agree to about 0.001 AUC, not to the digit.
    const runtime = health.runtime;
    const scoredBy = runtime && runtime.engine
      ? `scored by ${runtime.engine}${versions[runtime.engine] ? ` ${versions[runtime.engine]}` : ""}` +
        `${runtime.precision ? ` (${runtime.precision})` : ""}`
      : "engine not reported";
    els.footerVersions.textContent = [
      versions.idcscan ? `idcscan ${versions.idcscan}` : "", scoredBy,
    ].filter(Boolean).join(" · ");
  }

  function setStatus(kind, text) {
    const dot = els.status.querySelector(".status-dot");
    dot.className = `status-dot status-dot--${kind}`;
    els.statusText.textContent = text;
  }

  async function loadHealth() {
    try {
      const response = await fetch("/health", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      renderHealth(await response.json());
      els.serverBanner.hidden = true;
      const cardResponse = await fetch("/model-card", { headers: { Accept: "application/json" } });
      if (!cardResponse.ok) throw new Error(`model card: HTTP ${cardResponse.status}`);
      renderReadableCard(await cardResponse.json());
    } catch (err) {
      setStatus("bad", "Server unreachable");
      els.serverBanner.hidden = false;
      els.modelBody.replaceChildren(
        el("p", { class: "muted small prose", text: `The model card could not be loaded (${err.message}).` }),
      );
    }
  }

  // ---------------------------------------------------------------- results

  function createCard(item) {
    const node = els.template.content.firstElementChild.cloneNode(true);
    node.dataset.id = String(item.id);
    const name = node.querySelector(".result__name");
    // the whole name, with line-break chances after "_" (Kaggle names end in their class)
    const parts = (item.file.name || "pasted image").split(/(?<=_)/);
    parts.forEach((part, i) => {
      name.append(part);
      if (i < parts.length - 1) name.append(document.createElement("wbr"));
    });
    name.title = item.file.name || "";
    const img = node.querySelector("img");
    if (item.file.type && item.file.type.startsWith("image/") && item.file.type !== "image/tiff") {
      item.objectUrl = URL.createObjectURL(item.file);
      img.src = item.objectUrl;
      img.alt = `Uploaded image ${item.file.name}`;
      img.hidden = false;
      img.addEventListener("error", () => { img.hidden = true; }, { once: true });
    }
    item.node = node;
    return node;
  }

  function showResult(item) {
    const r = item.result;
    const node = item.node;
    const positive = Number(r.predicted_class) === 1;
    node.className = `card result ${positive ? "result--positive" : "result--negative"}`;
    node.querySelector(".spinner").remove();

    const img = node.querySelector("img");
    img.src = r.image;
    img.alt = `${item.file.name}: patch as the model saw it`;
    img.hidden = false;
    releaseThumb(item);

    const body = node.querySelector(".result__body");

    const probability = Number(r.probability_positive);
    const call = Number(r.threshold);            // 50.00: the call
    const review = Number(r.review_threshold);   // the bundle's review threshold
    const clamp = (v) => Math.max(0, Math.min(100, v));
    // positions through the CSS object model, not style attributes (a strict CSP allows it)
    const at = (node, side, value) => { node.style[side] = `${clamp(value)}%`; return node; };
    const meter = el("div", {
      class: `meter ${positive ? "meter--positive" : ""}`,
      role: "meter",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": probability,
      "aria-valuetext": `P(IDC) ${pct(probability)}; IDC Positive from ${pct(call)}, review flag from ${pct(review)}`,
      "aria-label": "Probability of IDC",
    }, [
      at(el("div", { class: "meter__fill" }), "width", probability),
      at(el("div", { class: "meter__threshold", title: `IDC Positive from P(IDC) ${pct(call)}` }),
        "left", call),
      // A review threshold at the call itself (the default bundle) would draw a second tick on
      // top of the first and read as a second rule; it is said once instead.
      review === call ? null : at(el("div", { class: "meter__threshold meter__threshold--review",
        title: `Review flag from P(IDC) ${pct(review)}` }), "left", review),
    ]);
    const caption = el("div", { class: "meter__caption", "data-testid": "thresholds" },
      thresholdCaption(probability, call, review, Boolean(r.flagged)));
    const flags = [];
    // The badge only when it adds to the call: with the review threshold at the call, every
    // IDC Positive patch is flagged and the badge would repeat the verdict above it.
    if (r.flagged && review !== call) {
      flags.push(el("span", { class: "badge badge--warning", "data-testid": "review-flag",
        title: `P(IDC) is at least the review threshold ${pct(review)}`, text: "Review" }));
    }
    if (r.demo) flags.push(el("span", { class: "badge badge--neutral", text: "demo model" }));
    body.append(
      el("div", { class: "result__verdict", "data-testid": "verdict", text: r.class_name }),
      el("div", { class: "meter-block" }, [meter, caption]),
      el("div", { class: "result__numbers" }, [
        el("span", {}, ["P(IDC) ", el("strong", { "data-testid": "probability", text: pct(probability) })]),
        el("span", { title: "Probability of the class called" }, [
          "Confidence ", el("strong", { "data-testid": "confidence", text: pct(r.confidence) }),
          ` (${r.class_name})`]),
      ]),
    );
    if (flags.length) body.append(el("div", { class: "result__flags" }, flags));
    if (item.example) {
      body.append(el("div", { class: "result__example", "data-testid": "example-label",
        text: `Example: labelled ${item.example.label} in the data set (patient ` +
              `${item.example.patient}, whom the shipped model was trained on)` }));
    }
    for (const warning of r.warnings || []) {
      body.append(el("div", { class: "result__warning", role: "note", "data-testid": "warning", text: warning }));
    }

    if (r.explanation || r.explanation_note) {
      const toggle = el("button", {
        type: "button",
        class: "btn btn--small",
        "aria-pressed": "false",
        "data-testid": "explain-toggle",
        text: "Show explanation",
      });
      toggle.addEventListener("click", () => setExplained(item, !item.explained));
      body.append(el("div", { class: "result__actions" }, [toggle]));
      item.toggle = toggle;
      setExplained(item, els.explainAll.checked);
    }
  }

  /** What the bar under this card says about this card: where its P(IDC) lies against the
   *  call's tick (and the review threshold's, where it differs), and what follows from it. */
  function thresholdCaption(probability, call, review, flagged) {
    const side = probability >= call ? `at or above ${pct(call)}` : `below ${pct(call)}`;
    const verdict = probability >= call ? "IDC Positive" : "IDC Negative";
    if (review === call) {
      return `P(IDC) ${side} (the tick): ${verdict}` +
        (flagged ? ", and so flagged for review" : ", not flagged for review");
    }
    const reviewSide = flagged ? `at or above the review threshold ${pct(review)} (dashed): ` +
      "flagged for review" : `below the review threshold ${pct(review)} (dashed): not flagged`;
    return `P(IDC) ${side} (solid tick): ${verdict} · ${reviewSide}`;
  }

  function setExplained(item, on) {
    const r = item.result;
    if (!r || !(r.explanation || r.explanation_note)) return;
    item.explained = on;
    const img = item.node.querySelector("img");
    const overlay = on && Boolean(r.explanation);
    img.src = overlay ? r.explanation : r.image;
    img.alt = overlay
      ? `${item.file.name}: Grad-CAM explanation overlay`
      : `${item.file.name}: patch as the model saw it`;
    // The tag only ever sits over a real overlay; an empty map says so in words instead.
    item.node.querySelector(".result__figure-tag").hidden = !overlay;
    const note = item.node.querySelector(".result__figure-note");
    note.hidden = !(on && !r.explanation);
    note.textContent = r.explanation_note || "";
    item.toggle.setAttribute("aria-pressed", String(on));
    item.toggle.textContent = on ? "Show patch" : "Show explanation";
  }

  // ---------------------------------------------------------------- large images

  const HANDOFF_DB = "idcscan";
  const HANDOFF_STORE = "handoff";

  /** Keep the File in IndexedDB so the large-image page can pick it up (no upload twice). */
  function handOff(file) {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open(HANDOFF_DB, 1);
      open.onupgradeneeded = () => open.result.createObjectStore(HANDOFF_STORE);
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const tx = open.result.transaction(HANDOFF_STORE, "readwrite");
        tx.objectStore(HANDOFF_STORE).put(file, "slide");
        tx.oncomplete = () => { open.result.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    });
  }

  async function openInLargeImageView(file) {
    try {
      await handOff(file);
      window.location.href = "/static/slide.html?from=patches";
    } catch (err) {
      window.location.href = "/static/slide.html";
    }
  }

  /** (width, height) of an image file the browser can decode, else null (the server judges). */
  async function imageSize(file) {
    if (typeof createImageBitmap !== "function") return null;
    try {
      const bitmap = await createImageBitmap(file);
      const size = [bitmap.width, bitmap.height];
      bitmap.close();
      return size;
    } catch (err) {
      return null;
    }
  }

  function showLargeImage(item, message) {
    const node = item.node;
    node.className = "card result result--large";
    const spinner = node.querySelector(".spinner");
    if (spinner) spinner.remove();
    node.querySelector(".result__head").append(
      el("span", { class: "badge badge--warning", text: "Large image" }),
    );
    const button = el("button", { type: "button", class: "btn btn--small", "data-testid": "open-large",
      text: "Map it in the large-image view" });
    button.addEventListener("click", () => openInLargeImageView(item.file));
    node.querySelector(".result__body").append(
      el("div", { class: "result__warning", role: "note", "data-testid": "large-image", text: message }),
      el("div", { class: "result__actions" }, [button]),
    );
  }

  function showError(item, message) {
    const node = item.node;
    node.className = "card result result--error";
    const figure = node.querySelector(".result__figure");
    figure.classList.add("result__figure--error");
    figure.replaceChildren(el("span", { class: "sr-only", text: "No preview" }));
    figure.insertAdjacentHTML("beforeend",
      '<svg viewBox="0 0 24 24" aria-hidden="true"><path fill="currentColor" d="M21 5v6.6l-3-3-4 4-4-4-4 4-3-3V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2zm-3 6.4 3 3V19a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-6.6l3 3 4-4 4 4 4-4z"/></svg>');
    node.querySelector(".result__head").append(
      el("span", { class: "badge badge--neutral", text: "Rejected" }),
    );
    node.querySelector(".result__body").append(
      el("div", { class: "result__error", role: "alert", "data-testid": "error", text: message }),
    );
  }

  function releaseThumb(item) {
    if (item.objectUrl) {
      URL.revokeObjectURL(item.objectUrl);
      item.objectUrl = null;
    }
  }

  function updateSummary() {
    const done = items.filter((i) => i.result);
    const positives = done.filter((i) => Number(i.result.predicted_class) === 1).length;
    const rejected = items.filter((i) => i.error).length;
    const large = items.filter((i) => i.large).length;
    const pending = items.length - done.length - rejected - large;
    const parts = [];
    if (done.length) parts.push(el("span", { class: "badge badge--neutral", text: `${done.length} analysed` }));
    if (positives) parts.push(el("span", { class: "badge badge--positive", text: `${positives} IDC Positive` }));
    if (done.length - positives) {
      parts.push(el("span", { class: "badge badge--negative", text: `${done.length - positives} IDC Negative` }));
    }
    if (rejected) parts.push(el("span", { class: "badge badge--warning", text: `${rejected} rejected` }));
    if (large) parts.push(el("span", { class: "badge badge--warning", text: `${large} for the large-image view` }));
    if (pending) parts.push(el("span", { class: "muted", text: `${pending} in progress…` }));
    els.summary.replaceChildren(...parts);
    els.empty.hidden = items.length > 0;
    els.clear.disabled = items.length === 0 || pending > 0;
    els.csv.disabled = done.length + rejected === 0;
  }

  // ---------------------------------------------------------------- upload queue

  function addFiles(fileList, example) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const fragment = document.createDocumentFragment();
    for (const file of files) {
      const item = { id: nextId++, file, result: null, error: null, explained: false, example };
      items.push(item);
      queue.push(item);
      fragment.append(createCard(item));
    }
    els.results.append(fragment);
    updateSummary();
    pump();
  }

  /** The real example patches that ship with idcscan: a click analyses one like a drop. */
  async function loadExamples() {
    let data;
    try {
      const response = await fetch("/api/examples");
      if (!response.ok) return;
      data = await response.json();
    } catch (err) {
      return;
    }
    if (!data.patches || !data.patches.length) return;
    els.examplesNote.textContent = `${data.source} ${data.note}`;
    for (const patch of data.patches) {
      const button = el("button", { type: "button", class: "example",
        title: `${patch.name}: labelled ${patch.label} in the data set`,
        "data-testid": "example" }, [
        el("img", { src: patch.url, alt: `Example patch labelled ${patch.label}`, width: 72,
                    height: 72 }),
        el("span", { class: "example__label", text: `labelled ${patch.label}` }),
      ]);
      button.addEventListener("click", async () => {
        const blob = await (await fetch(patch.url)).blob();
        addFiles([new File([blob], patch.name, { type: "image/png" })], patch);
      });
      els.examplesList.append(el("li", {}, [button]));
    }
    els.examples.hidden = false;
  }

  function pump() {
    while (running < MAX_PARALLEL && queue.length) {
      const item = queue.shift();
      running += 1;
      analyse(item).finally(() => {
        running -= 1;
        updateSummary();
        pump();
      });
    }
  }

  async function analyse(item) {
    const size = await imageSize(item.file);
    if (size && Math.max(size[0], size[1]) > state.maxPatchSide) {
      item.large = true;
      showLargeImage(item, `${size[0]} × ${size[1]} px is a large image, not a ` +
        `50 × 50 px patch: squeezed into one patch its answer would mean nothing. ` +
        `The large-image view tiles it at the training scale.`);
      return;
    }
    const form = new FormData();
    form.append("file", item.file, item.file.name || "pasted.png");
    let response;
    try {
      response = await fetch("/predict?explain=true", { method: "POST", body: form });
    } catch (err) {
      item.error = "Could not reach the idcscan server. Is `idcscan serve` still running?";
      showError(item, item.error);
      return;
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    // 422 (larger than a patch) or 413 (over /predict's limits, within /slide's): same way out
    if ((response.status === 422 || response.status === 413) && payload && payload.use === "/slide") {
      item.large = true;
      releaseThumb(item);
      showLargeImage(item, payload.error);
      return;
    }
    if (!response.ok || !payload || payload.error) {
      item.error = (payload && (payload.error || payload.detail)) ||
        `The server refused this file (HTTP ${response.status}).`;
      if (typeof item.error !== "string") item.error = JSON.stringify(item.error);
      releaseThumb(item);
      showError(item, item.error);
      return;
    }
    item.result = payload;
    showResult(item);
  }

  function clearResults() {
    for (const item of items) releaseThumb(item);
    items.length = 0;
    els.results.replaceChildren();
    updateSummary();
  }

  // ---------------------------------------------------------------- CSV export

  function csvCell(value) {
    const s = value === null || value === undefined ? "" : String(value);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  function downloadCsv() {
    const header = ["filename", "class_name", "predicted_class", "probability_positive_pct",
      "confidence_pct", "threshold_pct", "flagged", "review_threshold_pct", "warnings", "demo",
      "model", "error", "disclaimer"];
    const rows = [header];
    for (const item of items) {
      const r = item.result || {};
      const model = r.model ? `${r.model.name} ${r.model.version}` : "";
      rows.push([item.file.name, r.class_name, r.predicted_class, r.probability_positive,
        r.confidence, r.threshold, r.flagged, r.review_threshold, (r.warnings || []).join(" "),
        r.demo, model, item.error || (item.large ? "large image: use the large-image view" : ""),
        r.disclaimer || els.disclaimer.textContent]);
    }
    const text = rows.map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: "idcscan-results.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ---------------------------------------------------------------- wiring

  els.input.addEventListener("change", () => {
    addFiles(els.input.files);
    els.input.value = "";
  });

  for (const type of ["dragenter", "dragover"]) {
    els.dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      els.dropzone.classList.add("is-dragover");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    els.dropzone.addEventListener(type, () => els.dropzone.classList.remove("is-dragover"));
  }
  els.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer && event.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser navigate away from the results.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  document.addEventListener("paste", (event) => {
    const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
    if (files.length) addFiles(files);
  });

  els.explainAll.addEventListener("change", () => {
    for (const item of items) setExplained(item, els.explainAll.checked);
  });
  els.clear.addEventListener("click", clearResults);
  els.csv.addEventListener("click", downloadCsv);

  updateSummary();
  loadHealth();
  loadExamples();
})();
