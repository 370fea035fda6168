"""Layer 6 (capability): federated training on Flower: the Flower-free task, the ServerApp
and ClientApp, a federation's processes and credentials."""
