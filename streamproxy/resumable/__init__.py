"""Resumable uploads (issue 12): tus 1.0.0 and the IETF draft on one state machine.

Wired (local and S3 storage): `routes` (protocol detection, API key, refusals as JSON
and problem documents, 501 on storage without an `UploadStore`), `tus` and `draft` (one
thin translation per protocol), `flow` (create, append-then-complete, the final
answer), `appending` (a request's body through the one pump, intake.open_pump, into the
held upload), `complete` (the commit, as POST /files), `store` (the capability as an
async protocol), `localupload` (it, over localstore), `s3adapter` (it, over s3store and
s3append; imported only for S3 storage), `concat` (tus concatenation: a final upload
of partial uploads, finished or not), `assembly` (when and by whom a final upload
is assembled: the PATCH that finishes its last part, on any instance, or lazily its
HEAD or GET; concatenation-unfinished) and `takeover` (the draft's "stop the older
request": a draft request stops an append still running on its upload, in this
process, another worker or another instance). Not done yet: checksum-trailer. The
notes below are the plan these follow (and what is left of it).

The foundation:

- `hashstate`: the whole file's MD5 saved after any byte (OpenSSL's MD5 through ctypes,
  `opensslmd5`, else rehashes; the stored layout in `md5state`; figures inside).
- `state`: the upload record and its transitions, sans-IO; the protocol decisions.
- `problems`: the refusals, with API.md's status and code and the draft's problem types.
- `headers`: the tus and draft headers, parsed and written.
- `localstore`: local storage's capability: `.uploads/<id>/{data,info,lock}`, durable
  acknowledged offsets, a flock per upload across processes.

How the next session wires it (DESIGN.md: two thin translations onto one machine):

Routes, in a `resumable/routes.py` added to app.py's upload routes: `OPTIONS` and
`POST /files/uploads`, `HEAD|PATCH|DELETE|GET /files/uploads/{id}`. Every handler first
calls `headers.detect_protocol` (412 with `Tus-Version: 1.0.0` otherwise, OPTIONS
aside), checks `state.is_valid_id` (404), and turns a `ResumableError` into the upload
routes' JSON error plus `headers.problem_fields` for draft clients (then
`application/problem+json`), with `Upload-Offset` on 409 and `Upload-Complete: ?0` on
draft refusals. tus responses carry `Tus-Resumable`; `OPTIONS` answers `Tus-Version`,
`Tus-Extension` (`headers.format_extensions`; `checksum-trailer` only if aiohttp can
be made to read request trailers), `Tus-Max-Size`, `Tus-Checksum-Algorithm`, and for the
draft `Upload-Limit`. An append: take the lock (409 busy), read the record,
`check_append`, then stream the body at most `record.room(cap)` bytes through the pump
into `Appender.write`, feeding a `ResumableMD5` restored from `record.md5_state` (and
a `headers.Checksum.new_hash()` when `Upload-Checksum` came: on mismatch `discard()`
and 460), then `appended(...)` and `Appender.acknowledge(...)` before answering the new
offset. A client that drops mid-body still gets its received bytes acknowledged (the
draft's offset is what was processed): acknowledge in `finally` on a disconnect, after
cutting to what was fully written. Completion (tus: `reached_length`; draft:
`Upload-Complete: ?1`) calls `finish()`, then the same commit as `POST /files`: type
rules and the sniff from `record.head`, naming from the metadata (`filename`/`name`,
`conversationId`, `filetype`/`type`, `channel`), the clamd scan (reads the stored bytes
once: the only re-read besides concatenation, since MD5 does not compose), then publish
the data file under its name (on the same file system as `.tmp`: link(2) as the local
writer does), `committed(result)` or `failed(status, code, detail)`, events and metrics.
tus partial uploads complete without a commit; a final concatenation reads its parts
once, in order, hashing as it goes, and commits (assembly.py: when its parts finish).

The 104: for a draft creation, after aiohttp's `Expect: 100-continue` handler (the 100
must still be sent) and before the body is read, write
`HTTP/1.1 104 Upload Resumption Supported\\r\\nLocation: ...\\r\\n`
`Upload-Draft-Interop-Version: N\\r\\nUpload-Limit: max-size=CAP\\r\\n\\r\\n` straight on
`request.transport` (HTTP/1.1 only, only for interop 6 and 8), as aiohttp's own
100-continue does; the record must be created (durably) before it is sent.

Stop the older request (draft), as built (takeover.py has the decisions): each store
keeps a registry of this process's held uploads; a draft request stops a holder in its
own process directly, and one in another worker or instance through a marker that
process's watcher looks for (local `.uploads/.stop/<id>`, S3 `<id>/stop.<generation>`).
The older append ends at its next body read and acknowledges what it received; the
newer request waits up to 5 s for the lock, then 409 (local) or a fenced take-over
(S3, while the upload is receiving).

S3 (no flock across instances): the record lives in an info object
`<prefix>.uploads/<id>/info`, written only with conditional requests (`If-None-Match: *`
to create, `If-Match: <etag>` to update; a 412 is someone else's write: re-read, and
`Busy` if their lease runs). The lease is `record.lease` (holder = instance:pid:request,
`until` = now + a TTL renewed while bytes flow) with `generation` as the fencing token:
`check_holder` before every info write. The bytes are one multipart upload per upload
(`record.backend`: upload id, part ETags); parts of at least 5 MiB, a shorter tail
kept as its own object `<id>/tail.<generation>.<offset>` and prepended to the next
part, as tusd's `.part`. The routes build records from what they read; the S3 store's
`save` keeps its own fields (`backend`, `generation`, the lease) as they stand.
Completion completes the multipart upload into a staging key, then the normal commit.
moto 5.2.5's server honours `If-Match` and `If-None-Match: *` on PutObject, but checks
and then writes without a lock: racing writers can both win, rarely (s3store.py has the
measurement). `s3store` / `s3append` are this design; `s3adapter` is its routes' store.

Expiry: `--upload-expiry` (default 24 h) is the `lifetime` passed to `create` and
`appended`; retention asks `UploadArea.expired(now)` (S3: lists the area once),
takes each lock and calls `remove` (S3: abort the multipart upload, delete info and
tail), sending `upload.expired`; then `remove_orphans` deletes what a removal raced past
(local: stop markers of gone uploads or untouched for a minute; S3, from the same
listing: links, stop markers, parts, tails and multipart uploads beside no info,
s3orphans.py). `UploadArea.prepare` runs at start-up.
"""
