"""Batch jobs (OpenAI's Files and Batch APIs): a tenant's input files, its batches' lines
checked before any token is spent, run on the partition's lent capacity, and their output
and error files. Pure rules (`batch_input`, `lifecycle`) apart from the store and routes."""
