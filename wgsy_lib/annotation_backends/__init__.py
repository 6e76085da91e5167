"""Annotation backends: `openai_chat` (OpenAI API and compatible servers), `local` (a transformers
model on this machine) and `batch` (the OpenAI Batch API). Each is imported only when used, so the
local backend does not need a network client and the API backends do not load torch."""
