// streamproxy test page: uploads with progress, URL imports, previews and media messages.
// Every URL is relative to the page, so the page follows the service's base path.
"use strict";

const page = new URL(".", document.baseURI);
const $ = (selector, root = document) => root.querySelector(selector);

function endpoint(path) {
  return new URL(path, page).toString();
}

function authHeaders() {
  const key = $("#api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function conversationId() {
  const field = $("#conversation-id");
  if (!field.value.trim()) field.value = String(10000 + Math.floor(Math.random() * 90000));
  return field.value.trim();
}

function humanSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
}

// Hybrid Chat's media message body (CIM): IMAGE, VIDEO, AUDIO or FILE by MIME family.
function messageType(mimeType) {
  const family = (mimeType || "").split("/")[0].trim().toLowerCase();
  return { image: "IMAGE", video: "VIDEO", audio: "AUDIO" }[family] || "FILE";
}

function mediaMessage(result, label, caption) {
  return {
    type: messageType(result.type),
    caption: caption || null,
    markdownText: null,
    additionalDetails: { fileName: label },
    attachment: {
      mediaUrl: result.url,
      mimeType: result.type,
      size: result.size,
      thumbnail: null,
      mediaLabel: label,
      mediaName: result.name,
    },
  };
}

// The download as this page reaches it: its own route plus the query string the
// service gave (which may carry a signature), whatever host the `url` names.
function previewUrl(result) {
  return endpoint("files/download" + new URL(result.url, page).search);
}

function newCard(title) {
  const card = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".title", card).textContent = title;
  $(".state", card).textContent = "starting";
  $("#results").prepend(card);
  return card;
}

function showProgress(card, loaded, total, started) {
  const bar = $("progress", card);
  bar.max = total;
  bar.value = loaded;
  const seconds = (performance.now() - started) / 1000;
  const rate = seconds > 0 ? loaded / seconds : 0;
  const left = rate > 0 ? Math.ceil((total - loaded) / rate) : 0;
  $(".state", card).textContent =
    humanSize(loaded) + " of " + humanSize(total) +
    (rate ? " · " + humanSize(rate) + "/s · " + left + " s left" : "");
}

function showError(card, status, body) {
  const error = $(".error", card);
  card.classList.add("failed");
  $("progress", card).remove();
  $(".state", card).textContent = status ? "failed: " + status : "failed";
  if (body && typeof body === "object" && body.error) {
    error.textContent = body.error + ": " + body.detail +
      (body.requestId ? " (request id " + body.requestId + ")" : "");
  } else {
    error.textContent = status ? "the service answered " + status : "no answer from the service";
  }
  error.hidden = false;
}

function preview(result) {
  const family = (result.type || "").split("/")[0];
  const src = previewUrl(result);
  if (family === "image") {
    const image = document.createElement("img");
    image.alt = result.name;
    image.src = src;
    return image;
  }
  if (family === "video" || family === "audio") {
    const player = document.createElement(family);
    player.controls = true;
    player.preload = "metadata";
    player.src = src;
    return player;
  }
  return null;
}

function showResult(card, result, label) {
  card.classList.add("ok");
  $("progress", card).remove();
  $(".state", card).textContent = "stored";
  $(".name", card).textContent = result.name;
  $(".size", card).textContent = humanSize(result.size) + " (" + result.size + " bytes)";
  $(".type", card).textContent = result.type;
  $(".etag", card).textContent = result.etag;
  const link = $(".link", card);
  link.href = result.url;
  link.textContent = result.url;
  const shown = preview(result);
  if (shown) $(".preview", card).append(shown);
  const message = mediaMessage(result, label, $("#caption").value.trim());
  $(".message", card).textContent = JSON.stringify(message, null, 2);
  $(".done", card).hidden = false;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function upload(file) {
  const card = newCard(file.name);
  const form = new FormData();
  form.append("conversationId", conversationId());
  form.append("file", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", endpoint("files"));
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  const started = performance.now();
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) showProgress(card, event.loaded, event.total, started);
  });
  request.addEventListener("load", () => {
    const body = parseJson(request.responseText);
    if (request.status === 200 && body) showResult(card, body, file.name);
    else showError(card, request.status, body);
  });
  request.addEventListener("error", () => showError(card, 0, null));
  request.send(form);
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

function labelForImport(job, result) {
  if (job.fileName) return job.fileName;
  const prefix = job.conversationId + "_";
  return result.name.startsWith(prefix) ? result.name.slice(prefix.length) : result.name;
}

async function importFromUrl(event) {
  event.preventDefault();
  const data = new FormData(event.target);
  const job = { conversationId: conversationId() };
  for (const [name, value] of data.entries()) {
    if (String(value).trim()) job[name] = String(value).trim();
  }
  const card = newCard(job.sourceUrl);
  $(".state", card).textContent = "the service is fetching";
  $("progress", card).removeAttribute("value");
  try {
    const response = await fetch(endpoint("files/from-url"), {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(job),
    });
    const body = parseJson(await response.text());
    if (response.ok && body) showResult(card, body, labelForImport(job, body));
    else showError(card, response.status, body);
  } catch {
    showError(card, 0, null);
  }
}

function setUp() {
  const keyField = $("#api-key");
  keyField.value = sessionStorage.getItem("streamproxy-api-key") || "";
  keyField.addEventListener("change", () => {
    sessionStorage.setItem("streamproxy-api-key", keyField.value.trim());
  });
  conversationId();

  const picker = $("#files");
  picker.addEventListener("change", () => {
    uploadAll(picker.files);
    picker.value = "";
  });

  const drop = $("#drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer) uploadAll(event.dataTransfer.files);
  });

  $("#import-form").addEventListener("submit", importFromUrl);
  document.body.classList.add("ready");
}

setUp();
