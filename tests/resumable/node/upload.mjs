// Upload one file with tus-js-client; print {"url", "status", "offsets"} as JSON.
// node upload.mjs ENDPOINT FILE PROTOCOL CHUNK_SIZE CONVERSATION_ID [API_KEY]
// PROTOCOL: tus-v1 or ietf-draft-05 (the draft at interop version 6).
// PARALLEL=N in the environment: N partial uploads concatenated (tus concatenation).
import fs from 'node:fs'
import path from 'node:path'
import * as tus from 'tus-js-client'

const [endpoint, file, protocol, chunkSize, conversationId, apiKey] = process.argv.slice(2)
const data = fs.readFileSync(file)
const offsets = []
const upload = new tus.Upload(data, {
  endpoint,
  protocol,
  chunkSize: Number(chunkSize),
  parallelUploads: Number(process.env.PARALLEL || 1),
  retryDelays: [0, 200, 500, 1000],
  headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
  metadata: { filename: path.basename(file), conversationId },
  onChunkComplete: (_size, accepted) => offsets.push(accepted),
  onError: (error) => {
    process.stdout.write(JSON.stringify({ error: String(error) }) + '\n')
    process.exit(1)
  },
  onSuccess: (payload) => {
    const response = payload && payload.lastResponse
    process.stdout.write(
      JSON.stringify({ url: upload.url, status: response ? response.getStatus() : null, offsets }) + '\n',
    )
  },
})
upload.start()
