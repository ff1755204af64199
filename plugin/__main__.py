from locrob.cli import main

main()
