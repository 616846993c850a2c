from drengine.cli.main import main

main()
