"""Small programs the example jobs in ``services.d/`` run."""
