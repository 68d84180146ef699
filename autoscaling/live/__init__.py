"""The live partition controller: signals from the engines and gateways, the pure policy, targets applied to Ray Serve."""
