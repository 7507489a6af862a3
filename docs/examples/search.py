import kbc

with kbc.open("kb.kbpack") as kb:  # checks the local model is the one the bundle was built with
    for hit in kb.search("How do I run only the tests whose names match a filter?", k=3):
        print(f"{hit.score:.3f} {hit.source} p.{hit.pages}: {hit.text[:60]!r}")
