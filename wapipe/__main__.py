from wapipe.cli import main

main()
