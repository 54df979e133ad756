"""Upload from a URL: the server fetches a source and streams it into storage.

`safety` decides where a fetch may go, `resolver` enforces it inside aiohttp's
connector, `client` follows redirects with credentials kept to the first origin and
turns the source's failures into API errors, `body` reads the JSON request, and
`handler` ties them to the same pump and storage writer as the multipart upload.
"""
