"""Bytes on their way in: the one entry into the pump, the multipart parser,
naming, type sniffing and rules, virus scanning, transfer slots."""
