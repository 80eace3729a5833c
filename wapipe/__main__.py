from wapipe.app.cli import main

main()
