from drengine.cli.launch import main

main()
