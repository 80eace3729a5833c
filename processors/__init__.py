"""Stream processors (Faust apps). ``processors.send``: the send pipeline (``wapipe worker``)."""
