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

// Files this large go resumably (tus 1.0 at files/uploads), in chunks of a few MiB:
// a dropped network costs at most the chunk in flight, not the whole file.
const RESUMABLE_THRESHOLD = 8 * 1024 * 1024;
const RESUMABLE_CHUNK = 4 * 1024 * 1024;
// Waits before the next try after a failure (then the upload is given up).
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
// Answers after which waiting and asking for the offset may help.
const RETRY_STATUSES = new Set([409, 423, 429, 500, 502, 503, 504]);

class Refused extends Error {
  constructor(status, body) {
    super("the service answered " + status);
    this.status = status;
    this.body = body;
  }
}

function tusHeaders(extra) {
  return { "Tus-Resumable": "1.0.0", ...authHeaders(), ...extra };
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

async function refusal(response) {
  return new Refused(response.status, parseJson(await response.text()));
}

async function tusCreate(file, conversation) {
  const metadata = { filename: file.name, conversationId: conversation };
  if (file.type) metadata.filetype = file.type;
  const encoded = Object.entries(metadata).map(([key, value]) => key + " " + base64(value));
  const response = await fetch(endpoint("files/uploads"), {
    method: "POST",
    headers: tusHeaders({ "Upload-Length": String(file.size), "Upload-Metadata": encoded.join(",") }),
  });
  if (response.status !== 201) throw await refusal(response);
  // Only the id: the page talks to its own origin, whatever host --public-url names.
  const id = new URL(response.headers.get("Location"), page).pathname.split("/").pop();
  return endpoint("files/uploads/" + id);
}

// The server's offset, or null when the upload is gone (expired, cancelled, unknown).
async function tusOffset(url) {
  const response = await fetch(url, { method: "HEAD", headers: tusHeaders({}), cache: "no-store" });
  if (response.status === 404 || response.status === 410) return null;
  if (response.status !== 200) throw new Refused(response.status, null);
  return Number(response.headers.get("Upload-Offset"));
}

async function tusPatch(url, file, offset) {
  const response = await fetch(url, {
    method: "PATCH",
    headers: tusHeaders({
      "Content-Type": "application/offset+octet-stream",
      "Upload-Offset": String(offset),
    }),
    body: file.slice(offset, Math.min(file.size, offset + RESUMABLE_CHUNK)),
  });
  if (response.status !== 204) throw await refusal(response);
  return Number(response.headers.get("Upload-Offset"));
}

async function tusResult(url) {
  const response = await fetch(url, { headers: tusHeaders({}), cache: "no-store" });
  const body = parseJson(await response.text());
  if (response.status !== 200 || !body) throw new Refused(response.status, body);
  return body;
}

// The delay, cut short when the browser comes back online.
function pause(milliseconds) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, milliseconds);
    window.addEventListener("online", done);
  });
}

// tus: create (or take up the upload this file started earlier, kept in
// localStorage), PATCH chunk after chunk; after a failure wait, HEAD for the
// offset and go on from there. The result is the JSON of POST files.
async function uploadResumably(file, card) {
  const started = performance.now();
  const conversation = conversationId();
  const key = "streamproxy-upload:" + [conversation, file.name, file.size, file.lastModified].join(":");
  let url = localStorage.getItem(key);
  let offset = null; // unknown until HEAD tells
  let failures = 0;
  card.dataset.retries = "0";
  for (;;) {
    try {
      if (url === null) {
        url = await tusCreate(file, conversation);
        localStorage.setItem(key, url);
        offset = 0;
      }
      if (offset === null) {
        offset = await tusOffset(url);
        if (offset === null) {
          localStorage.removeItem(key);
          url = null;
          continue;
        }
      }
      showProgress(card, offset, file.size, started);
      if (offset >= file.size) {
        const result = await tusResult(url);
        localStorage.removeItem(key);
        showResult(card, result, file.name);
        return;
      }
      offset = await tusPatch(url, file, offset);
      failures = 0;
    } catch (error) {
      const refused = error instanceof Refused;
      if ((refused && !RETRY_STATUSES.has(error.status)) || failures >= RETRY_DELAYS.length) {
        if (refused && error.status !== 401 && error.status !== 403) localStorage.removeItem(key);
        showError(card, refused ? error.status : 0, refused ? error.body : null);
        return;
      }
      const wait = RETRY_DELAYS[failures];
      failures += 1;
      card.dataset.retries = String(Number(card.dataset.retries) + 1);
      $(".state", card).textContent = "connection lost; trying again in " + wait / 1000 + " s";
      await pause(wait);
      offset = null;
    }
  }
}

function upload(file) {
  if (file.size >= RESUMABLE_THRESHOLD) {
    uploadResumably(file, newCard(file.name));
    return;
  }
  postFile(file);
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function postFile(file) {
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
