"""The Files API (OpenAI's): a tenant's files, their metadata in the store and their bytes in a
storage folder, the rules for uploads and listing, and the routes. `Files` (service) is what
the batch runner reads inputs from and writes outputs to."""
