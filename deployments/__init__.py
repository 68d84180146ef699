"""Puts the platform on Ray: config, Serve application builders, CLI, cluster manifests."""
